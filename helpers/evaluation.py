"""Batched generation and GSM8K evaluation: strict vs lenient accuracy, format rate, length, tables.

Generation is always batched: vLLM `fast_generate` on the Unsloth backend, HF `generate` with left
padding on the CPU backend. Never one prompt at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config import RunConfig
from .data import extract_answer, extract_gold, extract_last_number, make_prompt
from .rewards import RULE_REWARD_FUNCS, answers_match
from .runtime import atomic_write_csv


def chat_prompts(tokenizer, questions: Sequence[str]) -> list[str]:
    """Chat-templated prompt strings, ending with the assistant turn opener."""
    return [tokenizer.apply_chat_template(make_prompt(q), tokenize=False, add_generation_prompt=True)
            for q in questions]


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 16,
             temperature: float = 0.0, n: int = 1, backend: str = "hf", lora_path: str | None = None,
             seed: int = 0, desc: str = "generate") -> list[list[str]]:
    """`n` completions for each prompt string (greedy when temperature == 0). Returns [prompt][sample]."""
    if backend == "unsloth":
        return _generate_vllm(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                              lora_path=lora_path, seed=seed)
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    greedy = temperature <= 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
                temperature=None if greedy else temperature, top_p=None, top_k=None,
                num_return_sequences=1 if greedy else n, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            per = 1 if greedy else n
            for j, i in enumerate(idx):
                out[i] = texts[j * per:(j + 1) * per] * (n if greedy else 1)
    if was_training:
        model.train()
    return out


def _generate_vllm(model, prompts, *, max_new_tokens, temperature, n, lora_path, seed):
    from vllm import SamplingParams

    params = SamplingParams(temperature=max(temperature, 0.0), top_p=1.0, max_tokens=max_new_tokens, n=n, seed=seed)
    lora = model.load_lora(str(lora_path)) if lora_path else None
    results = model.fast_generate(list(prompts), sampling_params=params, lora_request=lora)
    return [[o.text for o in r.outputs] for r in results]


def score_completions(completions: Sequence[str], golds: Sequence[str], tokenizer=None) -> "pd.DataFrame":
    """Per completion: strict/lenient correctness, every rule reward, and length in tokens."""
    import pandas as pd

    golds = list(golds)
    rows = {
        "strict_correct": [answers_match(extract_answer(c), g) for c, g in zip(completions, golds)],
        "lenient_correct": [answers_match(extract_last_number(c), g) for c, g in zip(completions, golds)],
    }
    for name, f in RULE_REWARD_FUNCS.items():
        rows[name] = f(prompts=None, completions=list(completions), answer=golds)
    rows["format_ok"] = [r > 0 for r in rows["strict_format_reward"]]
    if tokenizer is not None:
        rows["length_tokens"] = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    else:
        rows["length_tokens"] = [len(c.split()) for c in completions]
    return pd.DataFrame(rows)


def evaluate(model, tokenizer, rows: Sequence[dict], cfg: RunConfig, *, backend: str = "hf", label: str = "",
             lora_path: str | None = None, temperature: float = 0.0) -> tuple[dict, "pd.DataFrame"]:
    """Greedy answers to GSM8K `rows`: (summary dict, per-question DataFrame)."""
    questions = [r["question"] for r in rows]
    golds = [extract_gold(r["answer"]) for r in rows]
    prompts = chat_prompts(tokenizer, questions)
    completions = [c[0] for c in generate(
        model, tokenizer, prompts, max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size,
        temperature=temperature, backend=backend, lora_path=lora_path, seed=cfg.seed, desc=f"eval {label}".strip())]
    df = score_completions(completions, golds, tokenizer)
    df.insert(0, "question", questions)
    df.insert(1, "gold", golds)
    df.insert(2, "completion", completions)
    summary = summarize(df, label)
    return summary, df


def summarize(df, label: str = "") -> dict:
    return {
        "model": label,
        "n": len(df),
        "strict_accuracy": float(df["strict_correct"].mean()),
        "lenient_accuracy": float(df["lenient_correct"].mean()),
        "format_rate": float(df["format_ok"].mean()),
        "mean_length_tokens": float(df["length_tokens"].mean()),
    }


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021) for one question."""
    from math import comb

    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - comb(num_samples - num_correct, k) / comb(num_samples, k)


def comparison_table(summaries: Sequence[dict], path: str | Path | None = None):
    """One row per evaluated model (e.g. before / after); saved as CSV when `path` is given."""
    import pandas as pd

    df = pd.DataFrame(list(summaries))
    if path is not None:
        atomic_write_csv(path, df)
    return df


def side_by_side(before, after, n: int = 3):
    """The first `n` questions with the completion before and after training, for display."""
    import pandas as pd

    return pd.DataFrame({
        "question": before["question"].head(n), "gold": before["gold"].head(n),
        "before": before["completion"].head(n), "after": after["completion"].head(n),
        "before_correct": before["strict_correct"].head(n), "after_correct": after["strict_correct"].head(n),
    })
