"""Notebook 05, part 2: SFT data chosen by likelihood (after "SLM Reasoning"), and its dynamics across checkpoints.

- `score_pool`: the base model's mean per-token log-likelihood of each tagged reference solution given its question;
- `select_subsets`: equal-size highest / lowest / random-likelihood training subsets;
- `typed_pool` + `dynamics_record`: log-likelihood, perplexity, token count and entropy per *type* of sample, with
  notebook 03's probe (`dynamics.kind_stats`, the same pool format as `dynamics.dynamics_pool`);
- `slm_json` / `write_slm_json`: SLM Reasoning's output shape,
  {"steps": [...], "results_by_type": {type: {"avg_perplexity": [...], "avg_log_likelihood": [...],
  "avg_token_count": [...], "avg_entropy": [...]}}}.
"""
from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Sequence

from ..data import extract_gold, format_solution

SUBSET_NAMES = ("high_llh_train", "low_llh_train", "rand_llh_train")
SLM_FIELDS = {"avg_perplexity": "ppl", "avg_log_likelihood": "loglik", "avg_token_count": "tokens",
              "avg_entropy": "entropy"}


def score_pool(model, tokenizer, rows: Sequence[dict], tag_style: str = "reasoning", *, batch_size: int = 8
               ) -> list[dict]:
    """Each GSM8K row plus `llh_mean` (mean per-token log-likelihood of its tagged reference solution,
    `data.format_solution`, given its question's prompt), `llh_sum` and `tokens`; -inf/0 where unscorable."""
    from ..rerank import prompt_strings, token_logprobs

    lps = token_logprobs(model, tokenizer, prompt_strings(tokenizer, [r["question"] for r in rows], tag_style),
                         [format_solution(r["answer"], tag_style) for r in rows], batch_size=batch_size)
    return [dict(r) | ({"llh_mean": sum(x) / len(x), "llh_sum": float(sum(x)), "tokens": len(x)} if x else
                       {"llh_mean": float("-inf"), "llh_sum": float("-inf"), "tokens": 0}) for r, x in zip(rows, lps)]


def select_subsets(scored_rows: Sequence[dict], size: int, seed: int = 0) -> dict[str, list[dict]]:
    """{"high_llh_train", "low_llh_train", "rand_llh_train"}: `size` rows each, from the rows with a finite
    `llh_mean`. high = the `size` highest (highest first), low = the `size` lowest (lowest first), ties by pool
    order, so high and low are disjoint; rand = `size` rows drawn uniformly from all the rows with a finite
    `llh_mean` (random.Random(seed), in pool order), which may overlap both.
    ValueError unless 1 <= 2 * size <= usable rows."""
    usable = [(i, r) for i, r in enumerate(scored_rows) if math.isfinite(r["llh_mean"])]
    if size < 1 or 2 * size > len(usable):
        raise ValueError(f"need 1 <= 2 * size <= {len(usable)} scorable rows, got size={size}")
    ranked = sorted(usable, key=lambda ir: (-ir[1]["llh_mean"], ir[0]))
    low = sorted(usable, key=lambda ir: (ir[1]["llh_mean"], ir[0]))[:size]
    rand = sorted(random.Random(seed).sample(range(len(usable)), size))
    return {"high_llh_train": [r for _, r in ranked[:size]], "low_llh_train": [r for _, r in low],
            "rand_llh_train": [usable[k][1] for k in rand]}


def subset_overlap(subsets: dict[str, list[dict]]) -> dict[str, int]:
    """Rows (by question) the random subset shares with the high and the low subset: a random draw from the whole
    pool overlaps both (expected size x size / pool each), which a comparison against it must say."""
    def questions(name):
        return {r["question"] for r in subsets.get(name, [])}

    rand = questions("rand_llh_train")
    return {"rand_and_high": len(rand & questions("high_llh_train")),
            "rand_and_low": len(rand & questions("low_llh_train"))}


# ---------------------------------------------------------------------------------------
# Paraphrase
LEADING_CONNECTIVE = re.compile(r"^(?:so|then|thus|therefore|hence|now|finally|first|next|and|altogether|in total)\b"
                                r",?\s+", re.IGNORECASE)
LOWER_FIRST = {"He", "She", "They", "It", "The", "There", "This", "That", "These", "Those", "We", "If", "Each", "A",
               "An", "His", "Her", "Their", "Its", "After", "Since", "When", "All", "Together", "For", "In", "To"}


def with_connective(step: str, position: int, count: int) -> str:
    """`step` opened by "First, " / "Next, " / "In the end, " (by position; "In short, " for a single step), after
    dropping a leading connective ("So", "Then", "Therefore", …); a leading function word or -ing word is
    lower-cased."""
    lead = "In short, " if count == 1 else "First, " if position == 0 else \
        "In the end, " if position == count - 1 else "Next, "
    body = LEADING_CONNECTIVE.sub("", step, count=1)
    word = body.split(" ", 1)[0]
    if word in LOWER_FIRST or (word.endswith("ing") and word[1:].islower()):
        body = word.lower() + body[len(word):]
    return lead + body


def paraphrase(solution_text: str, *, reorder: bool = True, connectives: bool = True) -> str:
    """A deterministic rewrite of a GSM8K reference solution, returned in GSM8K form (steps, then "#### answer";
    calculator annotations removed), with the same final answer. Two changes, nothing else:
    1. reorder: left to right, two adjacent steps that share no number (neither uses the other's values) swap
       places, and a swapped step is not swapped again; the last step stays last;
    2. connectives: each step opens with "First, ", "Next, " or "In the end, " ("In short, " for a one-step
       solution) in place of a leading "So", "Then", "Therefore", … (`with_connective`).
    Quantities, numbers and names are untouched. ValueError for text without '####'."""
    from .steps import number_spans, solution_steps

    steps, gold = solution_steps(solution_text), extract_gold(solution_text)
    if reorder:
        values = [{v for _, _, v in number_spans(s)} for s in steps]
        i = 0
        while i + 2 < len(steps):
            if not values[i] & values[i + 1]:
                steps[i], steps[i + 1] = steps[i + 1], steps[i]
                values[i], values[i + 1] = values[i + 1], values[i]
                i += 2
            else:
                i += 1
    if connectives:
        steps = [with_connective(s, k, len(steps)) for k, s in enumerate(steps)]
    return "\n".join(steps) + f"\n#### {gold}"


# ---------------------------------------------------------------------------------------
# The typed dynamics pool
def typed_pool(tokenizer, subsets: dict[str, Sequence[dict]], heldout_rows: Sequence[dict], own_samples=None, *,
               n: int = 8, tag_style: str = "reasoning", paraphrase_rows: Sequence[dict] | None = None) -> list[dict]:
    """A fixed pool of {"kind", "context", "target"} (dynamics.dynamics_pool's format; the context is the question's
    chat prompt). Kinds, `n` items each at most:
    - each subset name (e.g. "high_llh_train"): the tagged reference solutions of its first n rows;
    - "heldout_ref": the tagged reference solutions of the first n held-out rows;
    - "student_answer": the model's own sampled completions (`own_samples`: question/completion columns; empty
      or non-text completions skipped), the whole completion as target;
    - "paraphrase": the tagged `paraphrase` of the first n of `paraphrase_rows` (default: the held-out rows, so
      "paraphrase" and "heldout_ref" hold the same content in two wordings)."""
    from ..rerank import prompt_strings

    items: list[tuple[str, str, str]] = []
    for name, rows in subsets.items():
        items += [(name, r["question"], format_solution(r["answer"], tag_style)) for r in list(rows)[:n]]
    items += [("heldout_ref", r["question"], format_solution(r["answer"], tag_style)) for r in list(heldout_rows)[:n]]
    if own_samples is not None:
        own = [(q, c) for q, c in zip(own_samples["question"], own_samples["completion"]) if isinstance(c, str) and c]
        items += [("student_answer", q, c) for q, c in own[:n]]
    src = heldout_rows if paraphrase_rows is None else paraphrase_rows
    items += [("paraphrase", r["question"], format_solution(paraphrase(r["answer"]), tag_style)) for r in list(src)[:n]]
    contexts = prompt_strings(tokenizer, [q for _, q, _ in items], tag_style)
    return [{"kind": k, "context": c, "target": t} for (k, _, t), c in zip(items, contexts)]


def dynamics_record(model, tokenizer, pool: Sequence[dict], *, batch_size: int = 4) -> dict[str, dict[str, float]]:
    """One checkpoint's record: per kind, loglik (mean of the summed log-likelihood), ppl, entropy and tokens
    (`dynamics.kind_stats`, notebook 03's probe)."""
    from ..dynamics import kind_stats

    return kind_stats(model, tokenizer, pool, batch_size=batch_size)


def slm_json(steps: Sequence[int], per_step_records: Sequence[dict]) -> dict:
    """SLM Reasoning's JSON from one `dynamics_record` per step: {"steps": [...], "results_by_type": {type:
    {"avg_perplexity", "avg_log_likelihood", "avg_token_count", "avg_entropy": one value per step}}}. A type
    missing at a step gets None there. ValueError when steps and records differ in number."""
    if len(steps) != len(per_step_records):
        raise ValueError(f"{len(steps)} steps but {len(per_step_records)} records")
    kinds = list(dict.fromkeys(k for rec in per_step_records for k in rec))
    return {"steps": list(steps),
            "results_by_type": {k: {field: [rec[k][key] if k in rec else None for rec in per_step_records]
                                    for field, key in SLM_FIELDS.items()} for k in kinds}}


def write_slm_json(path: str | Path, steps: Sequence[int], per_step_records: Sequence[dict]) -> Path:
    """`slm_json` written atomically (runtime.atomic_write_json: NaN/inf become null)."""
    from ..runtime import atomic_write_json

    return atomic_write_json(path, slm_json(steps, per_step_records))
