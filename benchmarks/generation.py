"""Benchmark: CPU generation and one GRPO step, fp32 vs bf16, and TRL's generation vs a plain `model.generate`
(SmolLM2-135M, the cpu preset's LoRA model, on CPU).

Parts (select with --parts; all by default):

  plain   tokens/s of a plain batched `model.generate` for each model (--models: the cpu preset's LoRA model, as
          GRPO generates, and the bare base) x precision (--precisions) x batch size (--batches): the same prompts
          (the first B of 16 GSM8K questions), sampling at temperature 1 as TRL does, every sequence forced to
          --tokens new tokens (min_new_tokens = max_new_tokens), eval mode, no_grad; median of --repeats.
          bf16 is the weights' dtype (base bf16, LoRA fp32, eager attention: helpers/training.py amp_flags,
          attn_implementation), as a bf16 run trains; --bf16-attn sdpa measures the attention not chosen.
          Generation at this size is memory-bound: bf16 reads half the bytes per token, but an unmerged fp32 LoRA
          adds small ops (casts to fp32 and back, two thin matmuls) to each of the 7 x 30 adapted layers per token.
  step    seconds per GRPO optimizer step of the cpu preset for each precision: a real GRPOTrainer.train() (rule
          rewards, the preset's questions x G completions, each forced to max_completion_length tokens, GSM8K
          prompts, loss, backward, AdamW), timed from
          on_step_begin to on_step_end; --steps steps, the first one reported apart (warm-up), the median of the
          rest as the step time.
  trl     the original comparison, at --trl-precision: TRL's GRPOTrainer._generate_and_score_completions
          (generation + rewards + old/ref log-probs), with the `generate` call inside it timed separately, vs a
          plain model.generate of the same batch (one cpu-preset step: per_device_batch / G questions x G) and
          GenerationConfig.

Precision "auto" resolves on this machine as the runs do (runtime.resolve_precision: bf16 on a CPU with AMX /
AVX512-BF16, else fp32); fp32 and bf16 can be measured on any CPU (bf16 is emulated, and slow, without the units).
The last line is key=value pairs: [base_]<prec>_b<B>_tok_s, [base_]bf16_vs_fp32_b<B>,
[base_]<prec>_b<max>_vs_b<min>, step_<prec>_s, step_bf16_vs_fp32, trl_generate_vs_plain, trl_step_part_vs_plain,
plain_s, trl_generate_s, new_tokens, and the machine (auto_precision, cpu_bf16_units, threads, load average at the
start). The machine is shared in CI-like sandboxes: compare numbers from one run, and mind the load average.
Run: .venv/bin/python benchmarks/generation.py [--parts plain,step,trl] [--precisions fp32,bf16] [--batches 4,16]
     [--models lora,base] [--bf16-attn eager|sdpa]
     [--tokens 128] [--repeats 2] [--steps 2] [--trl-precision auto] [--trl-repeats 3] [--completion-tokens 0]
Quick check (a minute or two): --batches 4 --tokens 16 --repeats 1 --steps 1 --trl-repeats 1 --completion-tokens 16
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

import torch

from helpers import config, data, logprob, rewards, runtime, training


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


def step_part(cfg, precisions, steps) -> dict:
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

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


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=_csv(str), default=["plain", "step", "trl"], help="plain,step,trl")
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
    unknown = (set(a.parts) - {"plain", "step", "trl"} | set(a.precisions) - {"fp32", "bf16", "fp16"}
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
    if "plain" in a.parts:
        results |= plain_part(cfg, a.precisions, a.batches, a.tokens, a.repeats, a.models, a.bf16_attn)
    if "step" in a.parts:
        results |= step_part(cfg, a.precisions, a.steps)
    if "trl" in a.parts:
        results |= trl_part(cfg, runtime.resolve_precision(a.trl_precision), a.trl_repeats)
    results |= {"auto_precision": auto, "cpu_bf16_units": ",".join(runtime.cpu_bf16_units()) or "none",
                "threads": torch.get_num_threads(), "load_avg_start": round(load_avg, 2)}
    print(" ".join(f"{k}={_fmt(v)}" for k, v in results.items()))


if __name__ == "__main__":
    main()
