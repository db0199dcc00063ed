"""Benchmark: TRL's generation inside a GRPO step vs a plain batched `model.generate`, on CPU (SmolLM2-135M).

Both sides get the same model (the cpu preset's LoRA model), the same prompts (4 GSM8K questions × G=4, as one
cpu-preset step), the same GenerationConfig (TRL's own: sampling at temperature 1) and the same length: every
sequence is forced to `max_completion_length` new tokens (min_new_tokens), so no side gains by stopping early.

  plain    model.generate on the left-padded batch, eval mode, no_grad
  trl      GRPOTrainer._generate_and_score_completions (generation + rewards + old/ref log-probs), with the
           `generate` call inside it timed separately

The last line is: trl_generate_vs_plain=<x> trl_step_part_vs_plain=<y> plain_s=<s> trl_generate_s=<s> new_tokens=<n>
Run: .venv/bin/python benchmarks/generation.py [--repeats N] [--tokens T]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from helpers import config, data, logprob, training


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=0, help="new tokens per completion (0: the cpu preset's)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = config.preset("cpu")
    if a.tokens:
        cfg = cfg.override(max_completion_length=a.tokens)
    model, tok = training.load_model(cfg, "hf")
    rows = data.load_gsm8k_rows("train", "bundled", n=max(1, cfg.per_device_batch // cfg.num_generations))
    batch = [{"prompt": data.make_prompt(r["question"]), "answer": data.extract_gold(r["answer"])}
             for r in rows for _ in range(cfg.num_generations)]

    from datasets import Dataset
    from trl import GRPOTrainer

    def zero_reward(completions, **kw):
        return [0.0] * len(completions)

    with tempfile.TemporaryDirectory() as tmp:
        args = training.grpo_args(cfg, tmp, "hf")
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
        for _ in range(a.repeats):
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
    print(f"{len(batch)} sequences, {new_tokens} new tokens each, {a.repeats} repeats (medians):")
    print(f"  plain model.generate           {p:7.2f} s")
    print(f"  TRL generate call              {g:7.2f} s   ({g / p:.2f}x plain)")
    print(f"  TRL _generate_and_score (all)  {s:7.2f} s   ({s / p:.2f}x plain)")
    print(f"trl_generate_vs_plain={g / p:.3f} trl_step_part_vs_plain={s / p:.3f} plain_s={p:.2f} "
          f"trl_generate_s={g:.2f} new_tokens={new_tokens}")


if __name__ == "__main__":
    main()
