"""Batched generation and GSM8K evaluation: strict vs lenient accuracy, format rate, length, tables.

Generation is always batched: vLLM `fast_generate` on the Unsloth backend, HF `generate` with left
padding on the CPU backend. Never one prompt at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config import RunConfig
from .data import extract_answer, extract_gold, extract_last_number, make_prompt
from .rerank import own_answer_scores, pass_at_k, samples_style  # the last two re-exported (rerank owns them)
from .rewards import answers_match, rule_reward_funcs
from .runtime import atomic_write_csv


def chat_prompts(tokenizer, questions: Sequence[str], tag_style: str = "reasoning") -> list[str]:
    """Chat-templated prompt strings (format instructions of `tag_style`), ending with the assistant turn opener."""
    return [tokenizer.apply_chat_template(make_prompt(q, tag_style=tag_style), tokenize=False,
                                          add_generation_prompt=True)
            for q in questions]


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 16,
             temperature: float = 0.0, n: int = 1, backend: str = "hf", lora_path: str | None = None,
             seed: int = 0, desc: str = "generate") -> list[list[str]]:
    """`n` completions for each prompt string (greedy when temperature == 0). Returns [prompt][sample]."""
    if backend == "unsloth":
        return _generate_vllm(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                              lora_path=lora_path, seed=seed)
    import torch

    from .runtime import progress

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    greedy = temperature <= 0
    with torch.inference_mode():
        for start in progress(range(0, len(order), batch_size), desc=desc):  # text lines when headless
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            gen = model.generate(**enc, generation_config=plain_generation_config(
                tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, n=n), use_model_defaults=False)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            per = 1 if greedy else n
            for j, i in enumerate(idx):
                out[i] = texts[j * per:(j + 1) * per] * (n if greedy else 1)
    if was_training:
        model.train()
    return out


def plain_generation_config(tokenizer, *, max_new_tokens: int, temperature: float = 0.0, n: int = 1):
    """A GenerationConfig with nothing from the model's own generation_config.json (Qwen2.5 ships
    repetition_penalty 1.05, top_p 0.8, top_k 20): the same decoding as vLLM's SamplingParams(temperature,
    top_p=1.0, max_tokens, n), so hf and Unsloth evaluations decode alike. Pass use_model_defaults=False."""
    from transformers import GenerationConfig

    greedy = temperature <= 0
    # top_k=0 (off) only when sampling: greedy ignores it, and setting it there makes transformers warn on every call
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=not greedy,
                            temperature=1.0 if greedy else temperature, top_p=1.0, top_k=50 if greedy else 0,
                            repetition_penalty=1.0,
                            num_return_sequences=1 if greedy else n, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)


def _generate_vllm(model, prompts, *, max_new_tokens, temperature, n, lora_path, seed):
    from vllm import SamplingParams

    params = SamplingParams(temperature=max(temperature, 0.0), top_p=1.0, max_tokens=max_new_tokens, n=n, seed=seed)
    lora = model.load_lora(str(lora_path)) if lora_path else None
    results = model.fast_generate(list(prompts), sampling_params=params, lora_request=lora)
    return [[o.text for o in r.outputs] for r in results]


def score_completions(completions: Sequence[str], golds: Sequence[str], tokenizer=None,
                      tag_style: str = "reasoning") -> "pd.DataFrame":
    """Per completion: strict/lenient correctness, every rule reward (format in `tag_style`), length in tokens."""
    import pandas as pd

    golds = list(golds)
    rows = {
        "strict_correct": [answers_match(extract_answer(c), g) for c, g in zip(completions, golds)],
        "lenient_correct": [answers_match(extract_last_number(c), g) for c, g in zip(completions, golds)],
    }
    for name, f in rule_reward_funcs(tag_style).items():
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
    prompts = chat_prompts(tokenizer, questions, cfg.tag_style)
    completions = [c[0] for c in generate(
        model, tokenizer, prompts, max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size,
        temperature=temperature, backend=backend, lora_path=lora_path, seed=cfg.seed, desc=f"eval {label}".strip())]
    df = score_completions(completions, golds, tokenizer, cfg.tag_style)
    from .logprob import gold_metrics  # how likely the model finds the gold answer after its own reasoning

    for col, values in gold_metrics(model, tokenizer, [make_prompt(q, tag_style=cfg.tag_style) for q in questions], completions, golds,
                                    batch_size=cfg.eval_batch_size).items():
        df[col] = values
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
        **({"gold_ppl_median": float(df["gold_ppl"].median())} if "gold_ppl" in df else {}),
        # The same over the gold answer's own tokens, without the closing tag (evaluations from before this
        # column existed have none).
        **({"gold_answer_ppl_median": float(df["gold_answer_ppl"].median()),
            "gold_answer_logprob_mean": float(df["gold_answer_logprob"].mean()),
            "gold_logprob_mean": float(df["gold_logprob"].mean())} if "gold_answer_ppl" in df else {}),
    }


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


# ---------------------------------------------------------------------------------------
# Diagnostics for the logprob reward (notebook 02)
def sample_groups(model, tokenizer, rows: Sequence[dict], cfg: RunConfig, *, n: int, backend: str = "hf",
                  temperature: float = 1.0, max_new_tokens: int | None = None, lora_path=None):
    """n sampled completions per question, labelled by strict and lenient correctness (long DataFrame)."""
    import pandas as pd

    questions = [r["question"] for r in rows]
    golds = [extract_gold(r["answer"]) for r in rows]
    samples = generate(model, tokenizer, chat_prompts(tokenizer, questions, cfg.tag_style),
                       max_new_tokens=max_new_tokens or cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size,
                       temperature=temperature, n=n, backend=backend, lora_path=lora_path, seed=cfg.seed,
                       desc=f"sample {n}/question")
    recs = []
    for qi, (q, g, comps) in enumerate(zip(questions, golds, samples)):
        for si, c in enumerate(comps):
            recs.append({"q": qi, "sample": si, "question": q, "gold": g, "completion": c, "tag_style": cfg.tag_style,
                         "own_answer": extract_answer(c),
                         "strict_correct": answers_match(extract_answer(c), g),
                         "lenient_correct": answers_match(extract_last_number(c), g)})
    return pd.DataFrame(recs)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN when a class is empty."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def add_logprob_scores(model, tokenizer, samples, transforms: Sequence[str] = ("sum", "mean"), batch_size: int = 8,
                       tag_style: str | None = None):
    """Add the logprob reward of each sample (gold given its own reasoning) under each transform, in place: the
    tokens the trained reward scores (`logprob_reward`'s default span: the gold answer and its newline).
    The samples are scored after the prompt they were generated from (`tag_style`, default: their column)."""
    from .logprob import apply_transform, gold_target_scores

    tag_style = samples_style(samples, tag_style)
    scored = gold_target_scores(model, tokenizer, [make_prompt(q, tag_style=tag_style) for q in samples["question"]],
                                samples["completion"], samples["gold"], batch_size)
    for name in transforms:
        samples[f"logprob_{name}"] = [apply_transform(name, x[:n_span]) for x, _, n_span in scored]
    samples["answer_logprob"] = [float(sum(x[:k])) for x, k, _ in scored]  # the gold answer's own tokens, no newline
    return samples


def reward_auroc(samples, transforms: Sequence[str] = ("sum", "mean")) -> dict:
    """How well each logprob transform separates correct from incorrect samples (strict, else lenient labels)."""
    label = "strict_correct" if 0 < samples["strict_correct"].sum() < len(samples) else "lenient_correct"
    out = {"labels": label, "positives": int(samples[label].sum()), "samples": len(samples)}
    for name in transforms:
        out[f"auroc_{name}"] = auroc(list(samples[f"logprob_{name}"]), list(samples[label]))
    return out


def trace_probe(model, tokenizer, question: str, completion: str, gold: str, *, answer_only: bool = False,
                tag_style: str = "reasoning") -> list[tuple[int, float]]:
    """log P(gold | prompt, first k lines of the reasoning) for k = 0..K: where does the answer become likely?
    Over the tokens the logprob reward scores (the gold answer and its newline); with `answer_only`, over the gold
    answer's own tokens alone."""
    from .data import split_reasoning
    from .logprob import gold_target_scores, prompt_text

    reasoning, _ = split_reasoning(completion)
    lines = reasoning.split("\n")
    p = prompt_text(tokenizer, make_prompt(question, tag_style=tag_style))
    prefixes = ["\n".join(lines[:k]) + ("\n" if k else "") for k in range(len(lines) + 1)]
    scored = gold_target_scores(model, tokenizer, [p] * len(prefixes), prefixes, [gold] * len(prefixes))
    return [(k, float(sum(x[:n] if answer_only else x[:n_span]))) for k, (x, n, n_span) in enumerate(scored)]


def best_of_n(model, tokenizer, samples, batch_size: int = 8, tag_style: str | None = None) -> dict:
    """Accuracy when picking one of N samples by: the first sample, majority vote over answers, and the
    model's confidence in its *own* answer (mean token log-prob of that answer given its own reasoning)."""
    from collections import Counter

    samples = samples.assign(confidence=own_answer_scores(model, tokenizer, samples, tag_style, transform="mean",
                                                          batch_size=batch_size))
    picks = {"first sample": [], "majority vote": [], "own-answer confidence": []}
    for _, g in samples.groupby("q"):
        picks["first sample"].append(bool(g.iloc[0]["strict_correct"]))
        answers = [a for a in g["own_answer"] if isinstance(a, str) and a]
        if answers:
            top = Counter(answers).most_common(1)[0][0]
            picks["majority vote"].append(bool(g[g["own_answer"] == top].iloc[0]["strict_correct"]))
        else:
            picks["majority vote"].append(False)
        picks["own-answer confidence"].append(bool(g.loc[g["confidence"].idxmax()]["strict_correct"]))
    return {k: sum(v) / len(v) for k, v in picks.items()} | {"questions": samples["q"].nunique(),
                                                             "n": int(samples.groupby("q").size().iloc[0])}


def compare_answers(exp, question: str, max_new_tokens: int | None = None):
    """Greedy answers to `question` from the starting model and from the trained one, side by side (a DataFrame).

    "Starting model" is the policy before GRPO: on hf it is the LoRA adapter switched off, which after a cold start
    is the base *with the SFT merged in* (training.cold_start_sft folds it into the weights); on Unsloth it is vLLM
    without the LoRA, i.e. the pre-SFT base. The `model` column says which one you are looking at."""
    import pandas as pd

    prompts = chat_prompts(exp.tokenizer, [question], exp.cfg.tag_style)
    n = max_new_tokens or exp.cfg.eval_max_new_tokens
    merged_sft = exp.backend == "hf" and exp.sft.get("merged")
    start_name = "base + cold-start SFT (merged), adapter off" if merged_sft else "base model (no adapter)"
    if exp.backend == "unsloth":
        start = generate(exp.model, exp.tokenizer, prompts, max_new_tokens=n, backend="unsloth")[0][0]
        lora = exp.adapter_dir
        trained = generate(exp.model, exp.tokenizer, prompts, max_new_tokens=n, backend="unsloth",
                           lora_path=str(lora) if lora else None)[0][0]
    else:
        with exp.model.disable_adapter():
            start = generate(exp.model, exp.tokenizer, prompts, max_new_tokens=n)[0][0]
        trained = generate(exp.model, exp.tokenizer, prompts, max_new_tokens=n)[0][0]
    trained_name = "after GRPO (LoRA on)" if exp.result is not None else "current adapter (not trained by GRPO yet)"
    rows = [(start_name, start), (trained_name, trained)]
    return pd.DataFrame([{"model": m, "answer": a, "parsed answer": extract_answer(a)} for m, a in rows])
