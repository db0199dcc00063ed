"""Benchmark of the logprob scorer on CPU with SmolLM2-135M (the embedded model).

In one run, on 8 GSM8K-length sequences (one prompt + ~150 reasoning tokens each, as in a GRPO group):
  floor   a per-sequence loop of the transformer body's forward (no LM head at all)
  naive   full-vocabulary log-softmax at every position, one sequence at a time
  scorer  helpers.logprob.score_targets (LM head on target positions only, length-bucketed batches),
          without and with prefix sharing (the group's prompt KV cache computed once; the reward's default)
and the scorer's share of one GRPO step (G=8, 128-token completions) measured inside a real TRL step.

The last line is: scorer_vs_floor=<x> naive_vs_floor=<y> max_abs_diff=<z> reward_share=<w>
where scorer_vs_floor is for the reward's default scorer (prefix sharing on).
Run: .venv/bin/python benchmarks/scoring.py  [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from helpers import config, data, logprob, rewards, training

G = 8
REASONING_TOKENS = 150


def build_group(tok):
    """One GSM8K test prompt and 8 different ~150-token reasoning traces (train solutions, tag format)."""
    q = data.load_gsm8k_rows("test", "bundled", n=1)[0]
    prompt = logprob.prompt_text(tok, data.make_prompt(q["question"]))
    sols = data.load_gsm8k_rows("train", "bundled", n=200)
    contexts, i = [], 0
    while len(contexts) < G:
        text = ""
        while len(tok(text, add_special_tokens=False)["input_ids"]) < REASONING_TOKENS:
            text += data.format_solution(sols[i]["answer"]).split("<answer>")[0].replace("</reasoning>", "") + "\n"
            i += 1
        ids = tok(text, add_special_tokens=False)["input_ids"][:REASONING_TOKENS]
        reasoning = tok.decode(ids) + "\n</reasoning>\n"
        contexts.append(prompt + reasoning + "<answer>\n")
    gold = data.extract_gold(q["answer"])
    targets = [f"{gold}\n</answer>"] * G  # scored whole here: a scorer benchmark, not the reward span
    return contexts, targets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--grpo-steps", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = config.preset("smoke")
    model, tok = training.load_model(cfg, "hf")
    model.eval()
    contexts, targets = build_group(tok)
    encoded = [logprob.encode_pair(tok, c, t) for c, t in zip(contexts, targets)]
    lens = [len(ids) for ids, _ in encoded]
    print(f"{G} sequences, {min(lens)}-{max(lens)} tokens each, target {len(encoded[0][0]) - encoded[0][1]} tokens; "
          f"torch threads={torch.get_num_threads()}")
    body, head = logprob.body_and_head(model)

    def floor():
        with torch.no_grad():
            for ids, _ in encoded:
                body(input_ids=torch.tensor([ids]))

    def naive():
        out = []
        with torch.no_grad():
            for ids, first in encoded:
                lp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
                out.append([lp[j - 1, ids[j]].item() for j in range(first, len(ids))])
        return out

    def scorer(batch_size, share):
        return lambda: logprob.score_targets(model, tok, contexts, targets, batch_size=batch_size, share_prefix=share)

    variants = {
        "floor (body loop)": floor,
        "naive (full-vocab, loop)": naive,
        "scorer batch=1": scorer(1, False),
        "scorer batch=8": scorer(8, False),
        "scorer batch=8 + prefix sharing": scorer(8, True),
    }
    for fn in variants.values():  # warm-up
        fn()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:34s} {t * 1000:8.1f} ms   ×floor {t / med['floor (body loop)']:.3f}")

    ref = naive()
    max_diff = 0.0
    for share in (False, True):
        got = logprob.score_targets(model, tok, contexts, targets, batch_size=8, share_prefix=share)
        max_diff = max(max_diff, max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r, g)))

    share = grpo_reward_share(model, tok, args.grpo_steps)
    f = med["floor (body loop)"]
    print(f"scorer_vs_floor without prefix sharing: {med['scorer batch=8'] / f:.3f}")
    print(f"scorer_vs_floor={med['scorer batch=8 + prefix sharing'] / f:.3f} "
          f"naive_vs_floor={med['naive (full-vocab, loop)'] / f:.3f} max_abs_diff={max_diff:.2e} "
          f"reward_share={share:.3f}")


def grpo_reward_share(model, tok, steps: int) -> float:
    """Scorer time / wall time over real GRPO steps (G=8, 128-token completions, format + logprob rewards)."""
    import tempfile

    from transformers import TrainerCallback

    lp_reward = logprob.logprob_reward(model, tok, transform="mean")
    spent = {"reward": 0.0}

    def timed_reward(*a, **kw):
        t = time.perf_counter()
        try:
            return lp_reward(*a, **kw)
        finally:
            spent["reward"] += time.perf_counter() - t

    timed_reward.__name__ = lp_reward.__name__
    step_times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.t)

    cfg = config.preset("smoke", max_steps=steps, num_generations=G, per_device_batch=G,
                        max_completion_length=128, save_steps=10_000, temperature=1.0)
    ds = data.grpo_dataset(data.load_gsm8k_rows("train", "bundled", n=8))
    funcs = [rewards.strict_format_reward, rewards.soft_format_reward, timed_reward]
    with tempfile.TemporaryDirectory() as tmp:
        training.train_grpo(cfg, model, tok, funcs, ds, tmp, extra_callbacks=[StepTimer()])
    total = sum(step_times)
    print(f"GRPO: {len(step_times)} steps, {total / len(step_times):.1f} s/step, logprob reward "
          f"{spent['reward'] / len(step_times):.2f} s/step")
    return spent["reward"] / total


if __name__ == "__main__":
    main()
