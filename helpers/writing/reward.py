"""The writing reward: how likely the plan makes the reference continuation (mean token log-prob, or
VR-CLI's bucketed improvement over no plan)."""
from __future__ import annotations

import math
from typing import Sequence

from ..config import ConfigError
from ..logprob import RewardStats, reward_inputs, score_or_none, scorer_scope
from .plans import extract_plan, limit_plan, plan_context
from .settings import KINDS, VRCLI_LEVELS, VRCLI_THRESHOLDS

def mean_logprob(lps: Sequence[float] | None) -> float:
    return float(sum(lps) / len(lps)) if lps else float("nan")


def relative_improvement(mean_lp_plan: float, mean_lp_noplan: float) -> float:
    """I = 100 · (1 − PPL_plan / PPL_noplan), with PPL = exp(−mean token log-prob). 0 means no help."""
    if not (math.isfinite(mean_lp_plan) and math.isfinite(mean_lp_noplan)):
        return float("nan")
    return 100.0 * (1.0 - math.exp(min(mean_lp_noplan - mean_lp_plan, 50.0)))


def vrcli_bucket(improvement: float, thresholds: Sequence[float] = VRCLI_THRESHOLDS,
                 levels: Sequence[float] = VRCLI_LEVELS) -> float:
    """The reward level of an improvement (percent): levels[k] for the k thresholds it reaches.
    Non-finite improvements (an unscorable pair) get the lowest level."""
    if len(levels) != len(thresholds) + 1 or list(thresholds) != sorted(thresholds):
        raise ConfigError(f"VR-CLI needs sorted thresholds and one more level than thresholds; got "
                          f"{list(thresholds)} and {list(levels)}.")
    if not math.isfinite(improvement):
        return float(levels[0])
    return float(levels[sum(improvement >= t for t in thresholds)])


def writing_reward(model, tokenizer, kind: str = "mean", *, scorer: str | None = None, max_plan_tokens: int = 64,
                   no_tag: str | float = "score", floor: float = -20.0, batch_size: int = 8,
                   thresholds: Sequence[float] = VRCLI_THRESHOLDS, levels: Sequence[float] = VRCLI_LEVELS,
                   max_length: int | None = None, name: str | None = None):
    """A TRL reward function over (prompt, completion, `answer` = reference continuation).

    kind="mean":  R = mean log P(reference token | prompt, plan); scorer "policy" by default.
    kind="vrcli": R = vrcli_bucket(I), I = relative perplexity improvement over the empty plan; scorer
                  "reference" (adapter off: the frozen model) by default, so no-plan scores are cached.
    Plans longer than `max_plan_tokens` are cut (flagged); an empty or missing plan is scored as the empty
    plan (its mean reward is the no-plan likelihood; its VR-CLI improvement is exactly 0). `no_tag`: a float
    gives completions without any tag that constant instead. Per-step stats (pass `.stats.flush` as
    `extra_metrics`): plan_tokens, plan_missing_frac, plan_truncated_frac, untagged_frac, mean_logprob,
    noplan_logprob, improvement_pct, reward.
    """
    if kind not in KINDS:
        raise ConfigError(f"Unknown writing reward {kind!r}. Choose one of {list(KINDS)}.")
    scorer = scorer or ("reference" if kind == "vrcli" else "policy")
    if scorer not in ("policy", "reference"):
        raise ConfigError(f"Unknown scorer {scorer!r}. Choose 'policy' or 'reference'.")
    if max_plan_tokens < 1:
        raise ConfigError(f"max_plan_tokens={max_plan_tokens} must be at least 1.")
    vrcli_bucket(0.0, thresholds, levels)  # validates thresholds/levels now, not mid-training
    stats = RewardStats(name or f"writing_{kind}")
    noplan_cache: dict[tuple[str, str], float] = {}  # only for the frozen scorer
    scope = scorer_scope(model, scorer)

    def reward(prompts=None, completions=(), answer=(), **kwargs) -> list[float]:
        texts, refs, pstr = reward_inputs(tokenizer, prompts, completions, answer)
        plans, status, truncated, n_tokens = [], [], [], []
        for t in texts:
            plan, st = extract_plan(t)
            plan, cut, n = limit_plan(plan, tokenizer, max_plan_tokens)
            plans.append(plan), status.append(st), truncated.append(cut), n_tokens.append(n)
        constant = no_tag != "score"
        to_score = [i for i, st in enumerate(status) if refs[i] and not (constant and st in ("untagged", "missing"))]
        # one no-plan sequence per distinct (prompt, reference): the comparison point
        keys = sorted({(pstr[i], refs[i]) for i in to_score} - (set(noplan_cache) if scorer == "reference" else set()))
        noplan_lps = score_or_none(model, tokenizer, [plan_context(p, "") for p, _ in keys], [r for _, r in keys],
                                 batch_size, max_length, True, scope, groups=[p for p, _ in keys])
        noplan = {k: mean_logprob(lp) for k, lp in zip(keys, noplan_lps)}
        if scorer == "reference":
            noplan_cache.update(noplan)
            noplan = noplan_cache
        plan_lps = score_or_none(model, tokenizer, [plan_context(pstr[i], plans[i]) for i in to_score],
                               [refs[i] for i in to_score], batch_size, max_length, True, scope,
                               groups=[pstr[i] for i in to_score])
        out = [float(no_tag) if constant else (floor if kind == "mean" else float(levels[0]))] * len(texts)
        means, improvements, base = [], [], []
        for i, lps in zip(to_score, plan_lps):
            m, b = mean_logprob(lps), noplan.get((pstr[i], refs[i]), float("nan"))
            imp = relative_improvement(m, b)
            out[i] = (m if math.isfinite(m) else floor) if kind == "mean" else vrcli_bucket(imp, thresholds, levels)
            if math.isfinite(m):
                means.append(m)
            if math.isfinite(b):
                base.append(b)
            if math.isfinite(imp):
                improvements.append(imp)
        n = max(1, len(texts))
        avg = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        stats.add(reward=avg(out), mean_logprob=avg(means), noplan_logprob=avg(base),
                  improvement_pct=avg(improvements), plan_tokens=avg(n_tokens),
                  plan_missing_frac=sum(p == "" for p in plans) / n, plan_truncated_frac=sum(truncated) / n,
                  untagged_frac=sum(st in ("untagged", "missing") for st in status) / n)
        return out

    reward.__name__ = name or f"writing_{kind}_reward"
    reward.stats = stats
    reward.kind, reward.scorer = kind, scorer
    return reward
