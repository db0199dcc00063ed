"""Benchmark: the cpu preset's GRPO step before (TRL 0.18's own hf step) and after (helpers/faststep.py), at equal
work, with what each lever buys; and the older parts (fp32 vs bf16, TRL's generation vs a plain `model.generate`).
SmolLM2-135M, the cpu preset's LoRA model, on CPU, at the precision a run resolves here (runtime.resolve_precision).

Default parts (--parts decode,loss,compare); the last line starts
    step_seconds_before=... step_seconds_after=... step_speedup=... decode_tok_s_before=... decode_tok_s_after=...

  decode  tokens/s of one GRPO generation batch (the preset's 16 rows, arith prompts, a non-zero adapter, sampled at
          temperature 1, every row forced to --decode-tokens new tokens, prefill included): `model.generate` (before),
          the fast decoder with the adapter unmerged (peft's sum) and merged into per-call weights (after); and the
          floor: the same decode step's matrix products alone, timed on this CPU at the model's shapes
          (decode_tok_s_floor, decode_after_vs_floor).
  loss    the loss forward + backward alone on one step's batch: TRL's _get_per_token_logps (each of the 16 rows
          runs its prompt) vs faststep's shared-prompt forward (each group's prompt once); loss_speedup.
  compare seconds per GRPO optimizer step, TRL's GRPOTrainer vs faststep's subclass, the same prompts (the preset's
          task), the same seed and precision, rule rewards, each batch trained on once (num_iterations 1). Equal work:
          every completion is forced to max_completion_length tokens on both paths (min_new_tokens = max_new_tokens,
          so neither stops early). --compare-steps steps per path, the first reported apart (warm-up), the median of
          the rest; step_speedup = before / after.
  natural the same two trainers with lengths sampled freely (each path stops at its own EOS; not equal work: it shows
          what stopping finished rows early adds in a real run), natural_step_seconds_*, natural_mean_length_*.
  plain / step / trl   the earlier measurements (fp32 vs bf16 generate and step on GSM8K prompts; TRL's generate
          call vs a plain generate), unchanged.

The machine is shared in CI-like sandboxes: compare numbers from one run, and mind the load average printed first.
Run: .venv/bin/python benchmarks/generation.py [--parts decode,loss,compare,natural] [--compare-steps 3]
     [--decode-batch 16] [--decode-tokens 64] [--repeats 2] [--trl-precision auto]
Quick check (a minute or two): --parts decode,compare --compare-steps 2 --decode-tokens 16 --repeats 1 --completion-tokens 16
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

import torch

from helpers import config, data, logprob, rewards, runtime, tasks, training


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def sampling_config(cfg, tok, tokens: int):
    """TRL 0.18.2's GenerationConfig for the hf path (grpo_trainer.py), with the length forced."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=cfg.temperature,
                            top_p=1.0, top_k=None, min_p=None, repetition_penalty=1.0, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def load(cfg, precision: str, model_kind: str = "lora", attn: str = ""):
    """The cpu preset's LoRA model (what GRPO generates with) or the bare base ("base"), at `precision`; `attn`
    overrides the attention implementation chosen at load (training.attn_implementation: eager for CPU bf16)."""
    if model_kind == "base":
        model, tok = training.load_embedded_base(training._torch_dtype(precision))
    else:
        model, tok = training.load_model(cfg.override(precision=precision), "hf")
    if attn:
        model.config._attn_implementation = attn  # read at every forward (transformers 4.52 attention modules)

    def names(params):
        return "/".join(sorted({str(p.dtype).replace("torch.", "") for p in params})) or "-"

    named = list(model.named_parameters())
    frozen, trained = names(p for n, p in named if "lora_" not in n), names(p for n, p in named if "lora_" in n)
    print(f"  [{precision} {model_kind}] base weights {frozen}, LoRA {trained}, "
          f"attention {model.config._attn_implementation}", flush=True)
    return model, tok


def plain_part(cfg, precisions, batches, tokens, repeats, models=("lora",), bf16_attn="") -> dict:
    rows = data.load_gsm8k_rows("train", "bundled", n=max(batches))
    out = {}
    for kind in models:
        pre = "" if kind == "lora" else f"{kind}_"
        for precision in precisions:
            model, tok = load(cfg, precision, kind, bf16_attn if precision == "bf16" else "")
            model.eval()
            texts = [logprob.prompt_text(tok, data.make_prompt(r["question"])) for r in rows]
            with torch.no_grad():  # warm-up: oneDNN picks its kernels on the first calls
                enc = tok(texts[: min(batches)], return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False)
                model.generate(**enc, generation_config=sampling_config(cfg, tok, 8))
            for b in batches:
                enc = tok(texts[:b], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
                times = []
                for r in range(repeats):
                    torch.manual_seed(r)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        seqs = model.generate(**enc, generation_config=sampling_config(cfg, tok, tokens))
                    times.append(time.perf_counter() - t0)
                    assert seqs.shape[1] - enc["input_ids"].shape[1] == tokens
                t = statistics.median(times)
                out[f"{pre}{precision}_b{b}_tok_s"] = b * tokens / t
                print(f"  plain generate {kind:4s} {precision:5s} batch {b:3d}: {b * tokens / t:7.1f} tok/s  "
                      f"({t:6.2f} s for {b} x {tokens} tokens, median of {repeats})", flush=True)
            del model
            gc.collect()
        for b in batches:
            if f"{pre}fp32_b{b}_tok_s" in out and f"{pre}bf16_b{b}_tok_s" in out:
                out[f"{pre}bf16_vs_fp32_b{b}"] = out[f"{pre}bf16_b{b}_tok_s"] / out[f"{pre}fp32_b{b}_tok_s"]
        if len(batches) > 1:
            lo, hi = min(batches), max(batches)
            for precision in precisions:
                out[f"{pre}{precision}_b{hi}_vs_b{lo}"] = (out[f"{pre}{precision}_b{hi}_tok_s"]
                                                          / out[f"{pre}{precision}_b{lo}_tok_s"])
    return out


def step_timer_class():
    """A TrainerCallback class that times each optimizer step (on_step_begin to on_step_end) into `.times`."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer


def step_part(cfg, precisions, steps) -> dict:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    StepTimer = step_timer_class()
    out = {}
    ds = data.grpo_dataset(data.load_gsm8k_rows("train", "bundled", n=steps * cfg.prompts_per_step))
    for precision in precisions:
        run_cfg = cfg.override(max_steps=steps, save_steps=10**6, logging_steps=10**6)
        model, tok = load(run_cfg, precision)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            args = training.grpo_args(run_cfg.override(precision=precision), tmp, "hf")
            args.save_strategy = "no"
            trainer = GRPOTrainer(model=model, reward_funcs=list(rewards.rule_reward_funcs().values()), args=args,
                                  processing_class=tok, train_dataset=ds, callbacks=[timer])
            trainer.generation_config.min_new_tokens = run_cfg.max_completion_length  # equal lengths
            for cb in (PrinterCallback, ProgressCallback):  # no progress bar or log dicts in the output
                trainer.remove_callback(cb)
            trainer.train()
        rest = timer.times[1:] or timer.times
        out[f"step_{precision}_s"] = statistics.median(rest)
        out[f"step_{precision}_first_s"] = timer.times[0]
        steps_s = ", ".join(f"{t:.2f}" for t in timer.times)
        print(f"  GRPO step {precision:5s}: {statistics.median(rest):6.2f} s (steps: {steps_s} s; "
              f"{cfg.prompts_per_step} question x G={cfg.num_generations} x {cfg.max_completion_length} tokens; "
              f"bf16 flag {args.bf16})", flush=True)
        del trainer, model
        gc.collect()
    if "step_fp32_s" in out and "step_bf16_s" in out:
        out["step_bf16_vs_fp32"] = out["step_bf16_s"] / out["step_fp32_s"]
    return out


def trl_part(cfg, precision: str, repeats: int) -> dict:
    model, tok = load(cfg, precision)
    rows = data.load_gsm8k_rows("train", "bundled", n=max(1, cfg.per_device_batch // cfg.num_generations))
    batch = [{"prompt": data.make_prompt(r["question"]), "answer": data.extract_gold(r["answer"])}
             for r in rows for _ in range(cfg.num_generations)]

    from datasets import Dataset
    from trl import GRPOTrainer

    def zero_reward(completions, **kw):
        return [0.0] * len(completions)

    with tempfile.TemporaryDirectory() as tmp:
        args = training.grpo_args(cfg.override(precision=precision), tmp, "hf")
        trainer = GRPOTrainer(model=model, reward_funcs=[zero_reward], args=args, processing_class=tok,
                              train_dataset=Dataset.from_list(batch))
        gen_cfg = trainer.generation_config
        gen_cfg.min_new_tokens = cfg.max_completion_length  # equal lengths on both sides
        timed: list[float] = []
        real_generate = model.generate

        def timed_generate(*args, **kw):
            t0 = time.perf_counter()
            out = real_generate(*args, **kw)
            timed.append(time.perf_counter() - t0)
            return out

        texts = [logprob.prompt_text(tok, x["prompt"]) for x in batch]
        enc = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        plain, trl_part, new_tokens = [], [], 0
        for _ in range(repeats):
            model.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gen_cfg)
            plain.append(time.perf_counter() - t0)
            new_tokens = out.shape[1] - enc["input_ids"].shape[1]
            model.train()  # as inside trainer.train()
            model.generate = timed_generate
            t0 = time.perf_counter()
            trainer._generate_and_score_completions(batch)
            trl_part.append(time.perf_counter() - t0)
            del model.generate
    p, g, s = statistics.median(plain), statistics.median(timed), statistics.median(trl_part)
    print(f"  [{precision}] {len(batch)} sequences, {new_tokens} new tokens each, {repeats} repeats (medians):")
    print(f"    plain model.generate           {p:7.2f} s")
    print(f"    TRL generate call              {g:7.2f} s   ({g / p:.2f}x plain)")
    print(f"    TRL _generate_and_score (all)  {s:7.2f} s   ({s / p:.2f}x plain)", flush=True)
    return {"trl_generate_vs_plain": g / p, "trl_step_part_vs_plain": s / p, "plain_s": p, "trl_generate_s": g,
            "new_tokens": new_tokens, "trl_precision": precision}


def _step_trainer(cfg, precision, tmp, ds, fast: bool, natural: bool, timer):
    """A GRPOTrainer (TRL's own, or helpers.faststep's) on the cpu preset's task prompts, rule rewards."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from helpers import faststep

    model, tok = load(cfg, precision)
    args = training.grpo_args(cfg.override(precision=precision), tmp, "hf")
    args.save_strategy = "no"
    cls = faststep.trainer_class(GRPOTrainer) if fast else GRPOTrainer
    trainer = cls(model=model, reward_funcs=list(rewards.rule_reward_funcs().values()), args=args,
                  processing_class=tok, train_dataset=ds, callbacks=[timer])
    if not natural:  # equal work: every completion is exactly max_completion_length tokens on both paths
        trainer.generation_config.min_new_tokens = cfg.max_completion_length
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, model, tok


def compare_part(cfg, precision: str, steps: int, natural: bool = False) -> dict:
    """TRL's hf step vs the fast step (helpers/faststep.py) on the same prompts, the same precision and the same
    number of completions, each trained on once (num_iterations 1). Lengths: forced to max_completion_length on
    both paths (min_new_tokens = max_new_tokens, so neither can stop early: equal work), or, with natural=True,
    sampled freely (each path's own lengths: not equal work, shown apart). The same seed on both paths."""
    StepTimer = step_timer_class()
    out = {}
    rows = tasks.train_rows(cfg.task, steps * cfg.prompts_per_step)
    ds = data.grpo_dataset(rows)
    run_cfg = cfg.override(max_steps=steps, save_steps=10**6, logging_steps=1)
    label = "natural" if natural else "forced"
    for fast in (False, True):
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            trainer, model, tok = _step_trainer(run_cfg, precision, tmp, ds, fast, natural, timer)
            trainer.train()
            lengths = [h.get("completions/mean_length") for h in trainer.state.log_history
                       if "completions/mean_length" in h]
        rest = timer.times[1:] or timer.times
        name = "after" if fast else "before"
        key = "" if not natural else "natural_"
        out[f"{key}step_seconds_{name}"] = statistics.median(rest)
        out[f"{key}mean_length_{name}"] = statistics.mean(lengths) if lengths else float("nan")
        print(f"  {'fast step' if fast else 'TRL step '} [{precision}, {label} lengths]: "
              f"{statistics.median(rest):6.2f} s (steps: {', '.join(f'{t:.2f}' for t in timer.times)} s; "
              f"{cfg.prompts_per_step} questions x G={cfg.num_generations}, mean completion "
              f"{out[f'{key}mean_length_{name}']:.1f} tokens)", flush=True)
        del trainer, model
        gc.collect()
    key = "" if not natural else "natural_"
    out[f"{key}step_speedup"] = out[f"{key}step_seconds_before"] / out[f"{key}step_seconds_after"]
    return out


def decode_part(cfg, precision: str, batch: int, tokens: int, repeats: int) -> dict:
    """Decode tokens/s of the LoRA model (a trained-looking adapter: B != 0) through model.generate (before), the fast
    decoder with the adapter unmerged (peft's sum: a lever on its own) and merged into the per-call weights (after),
    batch `batch`, every row forced to `tokens` new tokens, sampled at the preset's temperature; and the floor: the
    same decode step's matmuls alone (helpers.fastgen's fused projections at batch `batch`), timed."""
    from helpers import fastgen

    model, tok = load(cfg, precision)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.01)
    model.eval()
    rows = tasks.train_rows(cfg.task, batch)
    texts = [logprob.prompt_text(tok, data.make_prompt(r["question"])) for r in rows]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    gen = sampling_config(cfg, tok, tokens)
    out = {}
    for name in ("before", "unmerged", "after"):
        hook = fastgen.install(model) if name != "before" else None
        if hook is not None:
            hook.decoder.merge = name == "after"
        with torch.no_grad():
            model.generate(**{k: v[:2] for k, v in enc.items()}, generation_config=sampling_config(cfg, tok, 4))
        times = []
        for r in range(repeats):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            with torch.no_grad():
                seqs = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], generation_config=gen)
            times.append(time.perf_counter() - t0)
            assert seqs.shape[1] - enc["input_ids"].shape[1] == tokens
        if hook is not None:
            assert hook.calls["fallback"] == 0, hook.last_fallback
            fastgen.uninstall(model)
        out[f"decode_tok_s_{name}"] = batch * tokens / statistics.median(times)
        print(f"  decode {name:8s} [{precision}, batch {batch}, {tokens} tokens]: "
              f"{out[f'decode_tok_s_{name}']:7.1f} tok/s (prefill included; median of {repeats})", flush=True)
    floor_s = matmul_floor(model, batch, precision)
    out["decode_tok_s_floor"] = batch / floor_s
    out["decode_after_vs_floor"] = out["decode_tok_s_after"] / out["decode_tok_s_floor"]
    print(f"  floor: the decode step's matmuls alone take {floor_s * 1000:.1f} ms at batch {batch} "
          f"({out['decode_tok_s_floor']:.0f} tok/s); the fast decoder reaches "
          f"{out['decode_after_vs_floor']:.0%} of it", flush=True)
    return out


def loss_part(cfg, precision: str, repeats: int) -> dict:
    """The loss forward + backward alone, on one step's batch (the preset's questions x G completions of
    max_completion_length tokens): TRL's `_get_per_token_logps` (every row runs its prompt) vs helpers.faststep's
    shared-prompt forward (each group's prompt once), the same weights, the same tokens; median of `repeats`."""
    from trl.trainer.utils import selective_log_softmax

    from helpers import faststep

    model, tok = load(cfg, precision)
    rows = tasks.train_rows(cfg.task, cfg.prompts_per_step)
    texts = [logprob.prompt_text(tok, data.make_prompt(r["question"])) for r in rows for _ in range(cfg.num_generations)]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    c = cfg.max_completion_length
    torch.manual_seed(0)
    comp = torch.randint(100, 5000, (len(texts), c))
    ids = torch.cat([enc["input_ids"], comp], 1)
    mask = torch.cat([enc["attention_mask"], torch.ones_like(comp)], 1)
    model.train()

    def stock():
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=c + 1).logits[:, :-1][:, -c:]
        return selective_log_softmax(logits / cfg.temperature, ids[:, -c:])

    out = {}
    for name, fn in (("before", stock),
                     ("after", lambda: faststep.shared_prompt_logps(model, ids, mask, c, cfg.temperature))):
        times = []
        for _ in range(repeats + 1):  # the first is warm-up
            model.zero_grad()
            t0 = time.perf_counter()
            fn().sum().backward()
            times.append(time.perf_counter() - t0)
        out[f"loss_seconds_{name}"] = statistics.median(times[1:])
        print(f"  loss forward+backward {name:6s} [{precision}, {len(texts)} x ({enc['input_ids'].shape[1]} prompt + "
              f"{c} completion) tokens]: {out[f'loss_seconds_{name}']:6.2f} s", flush=True)
    out["loss_speedup"] = out["loss_seconds_before"] / out["loss_seconds_after"]
    return out


def matmul_floor(model, batch: int, precision: str, repeats: int = 20) -> float:
    """Seconds for one decode step's matrix products at `batch` rows: every projection of every layer and the LM
    head, at the weights' own dtype, inputs in that dtype (the rate this CPU gives these shapes)."""
    import torch.nn.functional as F

    from helpers.fastgen import FastDecoder

    dec = FastDecoder(model)
    dec.refresh()
    weights = [layer[k].weight for layer in dec.layers for k in ("qkv", "o", "gate_up", "down")]
    weights.append(dec.lm_head.weight)
    xs = {w.shape[1]: torch.randn(batch, w.shape[1]).to(w.dtype) for w in weights}
    with torch.no_grad():
        for w in weights:
            F.linear(xs[w.shape[1]], w)
        t0 = time.perf_counter()
        for _ in range(repeats):
            for w in weights:
                F.linear(xs[w.shape[1]], w)
    return (time.perf_counter() - t0) / repeats


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=_csv(str), default=["decode", "loss", "compare"],
                    help="decode,loss,compare (before/after, the default), natural, plain, step, trl")
    ap.add_argument("--compare-steps", type=int, default=3, help="steps per path in compare/natural (first: warm-up)")
    ap.add_argument("--decode-batch", type=int, default=16)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--precision", default="auto", help="decode, loss, compare, natural: auto (as a run resolves it "
                    "here) | fp32 | bf16 (fp32 on a CPU with bf16 units shows what a CPU without them gets, in part)")
    ap.add_argument("--precisions", type=_csv(str), default=["fp32", "bf16"], help="for plain and step")
    ap.add_argument("--batches", type=_csv(int), default=[4, 16], help="batch sizes for plain")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per sequence for plain")
    ap.add_argument("--repeats", type=int, default=2, help="repeats per plain measurement (median)")
    ap.add_argument("--models", type=_csv(str), default=["lora", "base"],
                    help="plain part: lora (the cpu preset's LoRA model, as GRPO generates) and/or base (no adapter)")
    ap.add_argument("--bf16-attn", default="", help="plain part: attention for bf16 (default: as loaded, eager)")
    ap.add_argument("--steps", type=int, default=2, help="GRPO steps per precision (the first is warm-up)")
    ap.add_argument("--trl-precision", default="auto", help="precision of the trl part (auto: as a run resolves it)")
    ap.add_argument("--trl-repeats", type=int, default=3)
    ap.add_argument("--completion-tokens", type=int, default=0,
                    help="max_completion_length in the step and trl parts (0: the cpu preset's, 128)")
    a = ap.parse_args()
    unknown = (set(a.parts) - {"plain", "step", "trl", "decode", "loss", "compare", "natural"} | set(a.precisions) - {"fp32", "bf16", "fp16"}
               | set(a.models) - {"lora", "base"} | {a.bf16_attn} - {"", "eager", "sdpa"})
    if unknown:
        ap.error(f"unknown part or precision: {sorted(unknown)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = config.preset("cpu")
    if a.completion_tokens:
        cfg = cfg.override(max_completion_length=a.completion_tokens)
    auto = runtime.resolve_precision("auto")
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU bf16 units: {', '.join(runtime.cpu_bf16_units()) or 'none found'}; precision 'auto' -> {auto}; "
          f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
          f"load average {load_avg:.2f} at the start", flush=True)
    results: dict = {}
    run_precision = runtime.resolve_precision(a.precision)
    if "decode" in a.parts:
        results |= decode_part(cfg, run_precision, a.decode_batch, a.decode_tokens, a.repeats)
    if "loss" in a.parts:
        results |= loss_part(cfg, run_precision, a.repeats)
    if "compare" in a.parts:
        results |= compare_part(cfg, run_precision, a.compare_steps)
    if "natural" in a.parts:
        results |= compare_part(cfg, run_precision, a.compare_steps, natural=True)
    if "plain" in a.parts:
        results |= plain_part(cfg, a.precisions, a.batches, a.tokens, a.repeats, a.models, a.bf16_attn)
    if "step" in a.parts:
        results |= step_part(cfg, a.precisions, a.steps)
    if "trl" in a.parts:
        results |= trl_part(cfg, runtime.resolve_precision(a.trl_precision), a.trl_repeats)
    results |= {"precision": run_precision, "auto_precision": auto,
                "cpu_bf16_units": ",".join(runtime.cpu_bf16_units()) or "none",
                "threads": torch.get_num_threads(), "load_avg_start": round(load_avg, 2)}
    first = ("step_seconds_before", "step_seconds_after", "step_speedup", "decode_tok_s_before", "decode_tok_s_after")
    ordered = {k: results[k] for k in first if k in results} | {k: v for k, v in results.items() if k not in first}
    print(" ".join(f"{k}={_fmt(v)}" for k, v in ordered.items()))


if __name__ == "__main__":
    main()
