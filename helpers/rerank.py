"""Notebook 05, part 3: N sampled completions per question -> pass@k, maj@k, and rerank@1 by a score.

The samples are a long DataFrame as `evaluation.sample_groups` makes it: one row per completion, with `q` (question
id), `question`, `completion`, `own_answer` and a correctness column (`strict_correct` by default). Within a
question the samples count in row order ("first" = the earliest row).

Scores for reranking (one float per row, -inf where a row cannot be scored, never an exception on model text):
- `completion_logprob_scores`: the model's mean token log-prob of its own completion given the prompt;
- `own_answer_scores`: log P(own answer | prompt, own reasoning), the logprob reward with the model's own
  answer in place of the gold one;
- `implicit_reward_scores`: log pi_SFT(y|x) - log pi_ref(y|x) over the completion's tokens (see there).

`pass_at_k` and `samples_style` live here and `helpers.evaluation` re-exports them (its `best_of_n` uses
`own_answer_scores`): imports run evaluation -> rerank only.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

from .rewards import MAX_ANSWER_CHARS, single_answer

NEG_INF = float("-inf")


def samples_style(samples, tag_style: str | None = None) -> str:
    """The tag style the samples were generated with: given, else sample_groups' column, else "reasoning"."""
    if tag_style is not None:
        return tag_style
    return str(samples["tag_style"].iloc[0]) if "tag_style" in samples and len(samples) else "reasoning"


# ---------------------------------------------------------------------------------------
# pass@k, maj@k
def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021) for one question: 1 - C(n-c, k) / C(n, k), the chance that
    k of the n samples drawn without replacement hold at least one correct one. ValueError unless
    0 <= c <= n and 1 <= k <= n (pass@k of more samples than were drawn is not estimable)."""
    if not (0 <= num_correct <= num_samples and 1 <= k <= num_samples):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={num_samples}, c={num_correct}, k={k}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def answer_key(answer) -> object | None:
    """The vote an answer casts: its value when it commits to one (`rewards.single_answer`: "18", "$18.00" and
    "36/2" vote together), the expression text for a LaTeX/arithmetic answer, None for a missing answer."""
    kind, what = single_answer(answer)
    return None if kind == "none" else (kind, what)


def majority_correct(answers: Sequence, correct: Sequence[bool]) -> bool:
    """Whether the majority answer of one question's samples is correct: the answer with most votes
    (`answer_key`); a tie goes to the answer seen first; its correctness is that of its first sample.
    Missing answers do not vote; no vote at all counts as wrong."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness labels")
    votes: dict = {}
    for i, a in enumerate(answers):
        key = answer_key(a)
        if key is not None:
            n, first = votes.get(key, (0, i))
            votes[key] = (n + 1, first)
    if not votes:
        return False
    _, first = max(votes.values(), key=lambda nf: (nf[0], -nf[1]))
    return bool(correct[first])


def maj_at_k(answers_per_question: Sequence[Sequence], correct_per_question: Sequence[Sequence[bool]], k: int
             ) -> float:
    """maj@k: the fraction of questions whose majority answer among their FIRST k samples is correct
    (`majority_correct`: ties to the answer seen first). This is first-k majority, not the expectation over
    random k-subsets: deterministic, and equal to plain majority vote at k = N. NaN for no questions;
    ValueError when a question has fewer than k samples or k < 1."""
    if len(answers_per_question) != len(correct_per_question):
        raise ValueError("answers_per_question and correct_per_question differ in length")
    if not answers_per_question:
        return float("nan")
    hits = []
    for answers, correct in zip(answers_per_question, correct_per_question):
        if not 1 <= k <= len(answers):
            raise ValueError(f"maj@{k} needs 1 <= k <= samples per question, a question has {len(answers)}")
        hits.append(majority_correct(list(answers)[:k], list(correct)[:k]))
    return sum(hits) / len(hits)


def question_groups(samples, correct_col: str = "strict_correct") -> list:
    """The samples grouped by `q` (sorted by q, rows in their order); KeyError naming a missing column."""
    missing = [c for c in ("q", correct_col) if c not in samples]
    if missing:
        raise KeyError(f"samples lack the column(s) {missing}: expected evaluation.sample_groups' DataFrame")
    return [g for _, g in samples.groupby("q", sort=True)]


def pass_curve(samples, ks: Sequence[int] | None = None, correct_col: str = "strict_correct"):
    """A DataFrame with one row per k: `pass_at_k` (the unbiased estimator averaged over questions, all N samples
    used) and `maj_at_k` (first-k majority of the `own_answer` column, see `maj_at_k`; without that column no
    sample votes), plus `questions`. `ks` defaults to 1..N where N is the
    smallest number of samples of a question; a k above that is a ValueError. No samples -> an empty frame."""
    import pandas as pd

    cols = ["k", "pass_at_k", "maj_at_k", "questions"]
    groups = question_groups(samples, correct_col)
    if not groups:
        return pd.DataFrame(columns=cols)
    n_min = min(len(g) for g in groups)
    ks = list(range(1, n_min + 1)) if ks is None else list(ks)
    answers = [list(g["own_answer"]) if "own_answer" in g else [None] * len(g) for g in groups]
    correct = [[bool(x) for x in g[correct_col]] for g in groups]
    rows = [{"k": k, "pass_at_k": sum(pass_at_k(len(c), sum(c), k) for c in correct) / len(correct),
             "maj_at_k": maj_at_k(answers, correct, k), "questions": len(groups)} for k in ks]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------
# Reranking
def as_score(x) -> float:
    """A score as a float; NaN, None and non-numbers become -inf (never picked unless nothing else is)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NEG_INF
    return NEG_INF if math.isnan(v) else v


def rerank_picks(samples, score_col: str, correct_col: str = "strict_correct") -> list[tuple[bool, float]]:
    """Per question (sorted by q): (is the highest-scoring sample correct, the question's mean correctness =
    its sampled pass@1). Ties and all -inf/NaN scores go to the first sample; NaN counts as -inf."""
    out = []
    for g in question_groups(samples, correct_col):
        scores = [as_score(s) for s in g[score_col]]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        correct = [bool(x) for x in g[correct_col]]
        out.append((correct[best], sum(correct) / len(correct)))
    return out


def rerank_at_1(samples, score_col: str, correct_col: str = "strict_correct") -> float:
    """Accuracy when each question keeps only its highest-`score_col` sample (ties: the first). NaN if empty."""
    picks = rerank_picks(samples, score_col, correct_col)
    return sum(p for p, _ in picks) / len(picks) if picks else float("nan")


def rerank_gain(samples, score_col: str, correct_col: str = "strict_correct", *, n_boot: int = 2000,
                seed: int = 0, level: float = 0.95) -> dict:
    """rerank@1 - sampled pass@1 (mean correctness of all samples), with a paired bootstrap interval: questions
    are resampled with replacement (numpy, seeded) and the per-question differences averaged; the interval is the
    central `level` quantile range. Returns rerank_at_1, pass_at_1, gain, ci_low, ci_high, questions (NaNs if
    there are no questions)."""
    import numpy as np

    picks = rerank_picks(samples, score_col, correct_col)
    if not picks:
        nan = float("nan")
        return {"rerank_at_1": nan, "pass_at_1": nan, "gain": nan, "ci_low": nan, "ci_high": nan, "questions": 0}
    picked = np.array([float(p) for p, _ in picks])
    base = np.array([b for _, b in picks])
    diff = picked - base
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    boot = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return {"rerank_at_1": float(picked.mean()), "pass_at_1": float(base.mean()), "gain": float(diff.mean()),
            "ci_low": float(np.quantile(boot, alpha)), "ci_high": float(np.quantile(boot, 1 - alpha)),
            "questions": len(diff)}


# ---------------------------------------------------------------------------------------
# Scores
def prompt_strings(tokenizer, questions, tag_style: str) -> list[str]:
    """The chat-templated prompt of each question (format instructions of `tag_style`)."""
    from .data import make_prompt
    from .logprob import prompt_text

    return [prompt_text(tokenizer, make_prompt(q, tag_style=tag_style)) for q in questions]


def reference_scope(model, reference):
    """(reference model, context-manager factory to score it under): reference="disable_adapter" is `model` with
    its LoRA adapter switched off; a model is used as it is. ValueError otherwise."""
    if isinstance(reference, str):
        if reference != "disable_adapter":
            raise ValueError(f"reference must be a model or 'disable_adapter', got {reference!r}")
        if not hasattr(model, "disable_adapter"):
            raise ValueError("reference='disable_adapter' needs a PeftModel (the model has no disable_adapter)")
        return model, model.disable_adapter
    if reference is None:
        raise ValueError("reference must be a model or 'disable_adapter', got None")
    return reference, nullcontext


def token_logprobs(model, tokenizer, contexts, targets, *, batch_size: int = 8, scope=nullcontext,
                   share_prefix: bool = False) -> list[list[float] | None]:
    """Per-token log P(target | context) under `model` inside `scope()`; None for an unscorable pair (empty target,
    or longer than the model's window). `logprob.score_or_none` does the work."""
    from .logprob import score_or_none

    return score_or_none(model, tokenizer, list(contexts), list(targets), batch_size, None, share_prefix, scope)


def token_logratios(model, tokenizer, contexts, targets, reference="disable_adapter", *, batch_size: int = 8
                    ) -> list[list[float] | None]:
    """Per target token: log pi(t | ...) - log pi_ref(t | ...), `model` against `reference` (see
    `reference_scope`); both score the same joint tokenization. None where either cannot score."""
    ref_model, ref_scope = reference_scope(model, reference)
    pol = token_logprobs(model, tokenizer, contexts, targets, batch_size=batch_size, share_prefix=True)
    ref = token_logprobs(ref_model, tokenizer, contexts, targets, batch_size=batch_size, scope=ref_scope,
                         share_prefix=True)
    return [None if a is None or b is None else [x - y for x, y in zip(a, b)] for a, b in zip(pol, ref)]


def completion_logprob_scores(model, tokenizer, samples, tag_style: str | None = None, *, batch_size: int = 8
                              ) -> list[float]:
    """(a) The mean token log-prob of each row's own completion given its prompt; -inf if empty/unscorable."""
    tag_style = samples_style(samples, tag_style)
    lps = token_logprobs(model, tokenizer, prompt_strings(tokenizer, samples["question"], tag_style),
                         [c if isinstance(c, str) else "" for c in samples["completion"]], batch_size=batch_size,
                         share_prefix=True)
    return [sum(x) / len(x) if x else NEG_INF for x in lps]


def own_answer_scores(model, tokenizer, samples, tag_style: str | None = None, *, transform: str = "sum",
                      batch_size: int = 8) -> list[float]:
    """(b) log P(own answer | prompt, own reasoning): `logprob.gold_logprobs` with the row's `own_answer` as the
    gold, reduced by `transform` ("sum" = log P of "{answer}\\n</answer>", "mean" = per token). Rows without an
    answer (missing, empty or over MAX_ANSWER_CHARS) get -inf."""
    from .logprob import apply_transform, gold_logprobs

    tag_style = samples_style(samples, tag_style)
    out = [NEG_INF] * len(samples)
    idx = [i for i, a in enumerate(samples["own_answer"]) if isinstance(a, str) and 0 < len(a) <= MAX_ANSWER_CHARS]
    if idx:
        sub = samples.iloc[idx]
        lps = gold_logprobs(model, tokenizer, prompt_strings(tokenizer, sub["question"], tag_style),
                            list(sub["completion"]), list(sub["own_answer"]), batch_size)
        for i, x in zip(idx, lps):
            out[i] = apply_transform(transform, x) if x else NEG_INF
    return out


def implicit_reward_scores(model, tokenizer, samples, tag_style: str | None = None, *,
                           reference="disable_adapter", batch_size: int = 8) -> list[float]:
    """(c) The implicit reward r(x, y) = log pi_SFT(y|x) - log pi_ref(y|x), summed over the completion's tokens.

    `model` is pi_SFT (the model fine-tuned on expert traces, part 1); `reference` is pi_ref, the base: another
    model, or "disable_adapter" when `model` is a PeftModel whose adapter holds the SFT (same weights, adapter off).
    -inf where a completion cannot be scored.

    This is the likelihood-ratio reward that DPO's reparametrisation and inverse RL point to: a policy trained
    with KL-regularised RL against pi_ref is optimal for r = beta * log(pi / pi_ref) (+ a function of x alone,
    which cancels when ranking the samples of one question). It is our cheap stand-in for R-AIRL's learned
    reward model, and differs from it: no discriminator is trained, nothing is adversarial (the "policy" is plain
    SFT on the expert traces, never updated against the reward), the reference is the base model rather than the
    current policy, and the reward is read off two likelihoods instead of a separately trained reward network.
    With an untrained adapter (LoRA B = 0) it is exactly 0 for every completion.
    """
    tag_style = samples_style(samples, tag_style)
    ratios = token_logratios(model, tokenizer, prompt_strings(tokenizer, samples["question"], tag_style),
                             [c if isinstance(c, str) else "" for c in samples["completion"]], reference,
                             batch_size=batch_size)
    return [float(sum(x)) if x else NEG_INF for x in ratios]


SCORES = {"completion_logprob": completion_logprob_scores, "own_answer_logprob": own_answer_scores,
          "implicit_reward": implicit_reward_scores}
