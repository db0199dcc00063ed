"""Evaluation of a writing policy on held-out stories: greedy plans and stories, the reference's
likelihood with and without the plan, diversity, and the before/after table."""
from __future__ import annotations

import math
import re
from typing import Sequence

from ..config import RunConfig
from ..logprob import prompt_text, score_or_none, scorer_scope
from .plans import extract_continuation, extract_plan, limit_plan, plan_context
from .reward import mean_logprob, relative_improvement
from .stories import make_prompt
from .story_metrics import STORY_METRICS, add_story_metrics

# The writing probe (WritingExperiment.probe): metric name -> per-story column of `evaluate`'s DataFrame
PROBE_METRICS = {
    "improvement_pct": "improvement_pct",  # I of the model's own plan over no plan, scored by the policy
    "improvement_pct_frozen": "improvement_pct_frozen",  # the same, scored with the adapter off
    "reference_logprob": "lp_plan",  # mean token log-prob of the reference given the own plan (the reward)
    "plan_tokens": "plan_tokens",
    "format_rate": "plan_ok",
    **STORY_METRICS,  # the story itself, from its text (story_metrics.py): loops, names kept, reference recall, ended
}
PROBE_PANELS = {"improvement_pct": "improvement of own plan over no plan (%)",
                "improvement_pct_frozen": "the same, frozen scorer (%)",
                "plan_tokens": "plan length (tokens)"}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over `texts` (1.0 = no repetition; nan if no n-gram)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = re.findall(r"[\w']+", (t or "").lower())
        grams += [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def score_plans(model, tokenizer, prompts: Sequence[str], plans: Sequence[str], refs: Sequence[str], *,
                frozen: bool = False, batch_size: int = 8) -> list[float]:
    """Mean token log-prob of each reference given prompt + plan ("" = no plan); `frozen`: adapter off."""
    scope = scorer_scope(model, "reference" if frozen else "policy")
    lps = score_or_none(model, tokenizer, [plan_context(p, a) for p, a in zip(prompts, plans)], list(refs),
                      batch_size, None, True, scope, groups=list(prompts))
    return [mean_logprob(lp) for lp in lps]


def _ppl(mean_lp: float) -> float:
    return math.exp(-mean_lp) if math.isfinite(mean_lp) else float("nan")


def evaluate(model, tokenizer, rows: Sequence[dict], cfg: RunConfig, *, backend: str = "hf", label: str = "",
             lora_path=None):
    """(summary, per-story DataFrame): greedy plan + story for each held-out opening, then the reference's
    perplexity given the model's own plan, no plan, and the author's plan (when the data has one), scored
    by the current model and by the frozen one (adapter off), plus plan length, story length and distinct-n."""
    import pandas as pd

    from ..evaluation import generate

    chat = [prompt_text(tokenizer, make_prompt(r["opening"])) for r in rows]
    texts = [c[0] for c in generate(model, tokenizer, chat, max_new_tokens=cfg.eval_max_new_tokens,
                                     batch_size=cfg.eval_batch_size, backend=backend, lora_path=lora_path,
                                     desc=f"writing {label}")]
    refs = [r["continuation"] for r in rows]
    records = []
    for r, t in zip(rows, texts):
        plan, status = extract_plan(t)
        plan, cut, n = limit_plan(plan, tokenizer, cfg.max_plan_tokens)
        story = extract_continuation(t)
        records.append({"id": r["id"], "opening": r["opening"], "reference": r["continuation"],
                        "author_plan": r.get("plan", ""), "completion": t, "plan": plan, "plan_status": status,
                        "plan_ok": float(status == "ok"), "plan_tokens": n, "plan_truncated": cut, "story": story,
                        "story_words": len(re.findall(r"[\w']+", story)),
                        "distinct_1": distinct_n([story], 1), "distinct_2": distinct_n([story], 2)})
    df = add_story_metrics(pd.DataFrame.from_records(records))
    plans = list(df["plan"])
    columns = {"lp_plan": (plans, False), "lp_noplan": ([""] * len(rows), False),
               "lp_plan_frozen": (plans, True), "lp_noplan_frozen": ([""] * len(rows), True)}
    if any(r.get("plan") for r in rows):
        columns["lp_author_plan"] = ([r.get("plan", "") for r in rows], False)
    for col, (ps, frozen) in columns.items():
        df[col] = score_plans(model, tokenizer, chat, ps, refs, frozen=frozen, batch_size=cfg.eval_batch_size)
    df["improvement_pct"] = [relative_improvement(a, b) for a, b in zip(df["lp_plan"], df["lp_noplan"])]
    df["improvement_pct_frozen"] = [relative_improvement(a, b)
                                    for a, b in zip(df["lp_plan_frozen"], df["lp_noplan_frozen"])]
    return summarize(df, label), df


def summarize(df, label: str = "") -> dict:
    """One row of the writing table from a per-story DataFrame."""
    import numpy as np

    def med_ppl(col):
        return float(np.nanmedian([_ppl(x) for x in df[col]])) if col in df and len(df) else float("nan")

    ok = df["plan_status"] == "ok"
    return {
        "model": label, "n": int(len(df)),
        "ppl_own_plan": med_ppl("lp_plan"), "ppl_no_plan": med_ppl("lp_noplan"),
        "ppl_author_plan": med_ppl("lp_author_plan"),
        "improvement_pct": float(np.nanmean(df["improvement_pct"])) if len(df) else float("nan"),
        "plan_helps_frac": float((df["improvement_pct"] > 0).mean()) if len(df) else float("nan"),
        "ppl_own_plan_frozen": med_ppl("lp_plan_frozen"),
        "improvement_pct_frozen": float(np.nanmean(df["improvement_pct_frozen"])) if len(df) else float("nan"),
        "plan_format_rate": float(ok.mean()) if len(df) else float("nan"),
        "plan_tokens": float(df["plan_tokens"].mean()) if len(df) else float("nan"),
        "story_words": float(df["story_words"].mean()) if len(df) else float("nan"),
        "distinct_1": distinct_n(list(df["story"]), 1), "distinct_2": distinct_n(list(df["story"]), 2),
        **{name: float(np.nanmean(df[col])) if col in df and df[col].notna().any() else float("nan")
           for name, col in STORY_METRICS.items()},
    }


def before_after_pairs(before, after):
    """One row per held-out story with both models' plans and stories side by side (the browser's input)."""
    keep = ["id", "opening", "reference", "author_plan"]
    b = before[keep + ["plan", "story", "lp_plan", "improvement_pct"]]
    a = after[["id", "plan", "story", "lp_plan", "improvement_pct"]]
    out = b.merge(a, on="id", suffixes=("_before", "_after"))
    for s in ("before", "after"):
        out[f"ppl_{s}"] = [round(_ppl(x), 3) for x in out[f"lp_plan_{s}"]]
    return out
