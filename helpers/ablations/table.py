"""The ablation table: one row per variant (results.json + metrics.csv), plus the shared start."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

from .. import evaluation
from ..config import RunConfig


def _tail_mean(df, col: str, frac: float = 0.25) -> float:
    """Mean of `col` over the last `frac` of logged steps (at least one row); NaN when absent."""
    if col not in df or df[col].dropna().empty:
        return float("nan")
    s = df[col].dropna()
    return float(s.tail(max(1, int(round(len(s) * frac)))).mean())


def _col_mean(df, col: str) -> float:
    return float(df[col].mean()) if col in df and not df[col].dropna().empty else float("nan")


def variant_row(run_dir: str | Path) -> dict:
    """One table row from a variant's results.json and metrics.csv.

    Accuracy, gold perplexity and eval length: the greedy "after" evaluation. reward_std and
    frac_reward_zero_std: mean over all steps (how much signal the groups carried). reward, kl and
    train completion length: mean over the last quarter of steps (where training ended). wall_time_s:
    median step interval × steps, which ignores the gaps of interrupted sessions.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    v, ev = res.get("variant", {}), res.get("eval", {})
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    if (run_dir / "effective_args.json").exists():  # what the trainer really used (Unsloth may change it)
        eff = json.loads((run_dir / "effective_args.json").read_text())
        cfg = {**cfg, "scale_rewards": eff.get("scale_rewards"), "loss_type": eff.get("loss_computed_as")}
        v = {k: val for k, val in v.items() if k not in ("scale_rewards", "loss_type")}
    m = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists() else pd.DataFrame()
    steps = int(m["step"].max()) if "step" in m and len(m) else int(res.get("train", {}).get("steps", 0))
    step_s = float(m["time"].diff().median()) if "time" in m and len(m) > 1 else float("nan")
    wall = step_s * steps if math.isfinite(step_s) else float(res.get("train", {}).get("seconds_this_session", "nan"))
    return {
        "variant": v.get("name", run_dir.name),
        **{k: v.get(k) for k in ("transform", "scorer", "format_rewards", "logprob_weight", "sft_weight")},
        **{k: v.get(k, cfg.get(k, RunConfig.__dataclass_fields__[k].default)) for k in ("scale_rewards", "loss_type")},
        "steps": steps,
        "wall_time_s": round(wall, 1) if math.isfinite(wall) else wall,
        "strict_accuracy": ev.get("strict_accuracy", float("nan")),
        "lenient_accuracy": ev.get("lenient_accuracy", float("nan")),
        "format_rate": ev.get("format_rate", float("nan")),
        "gold_ppl_median": ev.get("gold_ppl_median", float("nan")),
        "gold_answer_ppl_median": ev.get("gold_answer_ppl_median", float("nan")),  # answer tokens, no closing tag
        "eval_length_tokens": ev.get("mean_length_tokens", float("nan")),
        "train_completion_length": _tail_mean(m, "completions/mean_length"),
        "reward": _tail_mean(m, "reward"),
        "reward_std": _col_mean(m, "reward_std"),
        "frac_reward_zero_std": _col_mean(m, "frac_reward_zero_std"),
        "kl": _tail_mean(m, "kl"),
    }


def aggregate(grid_dir: str | Path, names: Sequence[str] | None = None, same_as: dict[str, str] | None = None):
    """One DataFrame row per variant with results.json (in `names` order, else folder order), plus a
    "start" row (the shared starting policy, no GRPO) when the grid evaluated it. A variant skipped because
    it coincides with another on this backend (`same_as`) gets a row naming that variant."""
    import pandas as pd

    grid_dir = Path(grid_dir)
    same_as = same_as or {}
    names = list(names) if names is not None else sorted(p.name for p in grid_dir.iterdir() if p.is_dir())
    rows = []
    for n in names:
        if (grid_dir / n / "results.json").exists():
            rows.append(variant_row(grid_dir / n))
        elif n in same_as:
            rows.append({"variant": n, "same_as": same_as[n]})
    start = grid_dir / "eval_samples_start.csv"
    if start.exists():
        s = evaluation.summarize(pd.read_csv(start, keep_default_na=False), "start")
        rows.insert(0, {"variant": "start", "steps": 0, "strict_accuracy": s["strict_accuracy"],
                        "lenient_accuracy": s["lenient_accuracy"], "format_rate": s["format_rate"],
                        "gold_ppl_median": s.get("gold_ppl_median", float("nan")),
                        "gold_answer_ppl_median": s.get("gold_answer_ppl_median", float("nan")),
                        "eval_length_tokens": s["mean_length_tokens"]})
    table = pd.DataFrame(rows)
    full = [r for r in rows if "same_as" not in r and r.get("variant") != "start"]
    order = list(full[-1]) if full else []  # a trained variant's row has every column, in reading order
    return table[order + [c for c in table.columns if c not in order]]


# Per-question columns of the greedy evaluation (eval_samples_*.csv) that the paired comparisons use.
CHANGE_METRICS = {"strict_accuracy": "strict_correct",         # the answer right, in the format
                  "gold_answer_logprob": "gold_answer_logprob",  # log P(gold answer | prompt, own reasoning)
                  "format_rate": "format_ok",                    # the completion in the tag format
                  "completion_tokens": "length_tokens"}           # how long the greedy completion is
CONTROL = "mean_only"  # the variant the others change one thing of (cpu grid)


def _samples(path: str | Path):
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False)


def held_out_changes(grid_dir: str | Path, names: Sequence[str], *, against: str = "start",
                     metrics: dict[str, str] = CHANGE_METRICS, seed: int = 0):
    """One row per (variant, metric): the variant's greedy evaluation after GRPO minus `against` ("start": the
    shared starting policy's; else another variant's after GRPO), paired question by question, with the bootstrap
    95 % interval and verdict (probe.changes). Variants without an evaluation yet, and `against` itself, are left out."""
    import pandas as pd

    from .. import probe

    grid_dir = Path(grid_dir)
    base_path = grid_dir / ("eval_samples_start.csv" if against == "start" else f"{against}/eval_samples_after.csv")
    if not base_path.exists():
        raise FileNotFoundError(f"{base_path} is missing: evaluate {against!r} first (run the grid).")
    base = _samples(base_path)
    parts = []
    for name in names:
        path = grid_dir / name / "eval_samples_after.csv"
        if name == against or not path.exists():
            continue
        t = probe.changes(_samples(path), base, list(metrics), names=(against, name), columns=metrics,
                          key="question", dropna=True, seed=seed)
        parts.append(t.rename(columns={against: "against", name: "variant_mean"}).assign(variant=name, vs=against))
    cols = ["variant", "vs", "metric", "against", "variant_mean", "delta", "ci95_lo", "ci95_hi", "verdict", "n"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


# ---------------------------------------------------------------------------------------
# Seeds: one grid, each variant trained with several GRPO seeds from the same cold start
_SEED_SUFFIX = re.compile(r"^(?P<base>.+)_s(?P<seed>\d+)$")


def replicate(variants: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
    """`variants` once with the base config's seed, then again for every seed in `seeds` as "<name>_s<seed>" with
    {"seed": seed}: the same cold start and start evaluation, another GRPO sampling. An empty `seeds` changes nothing."""
    out = [dict(v) for v in variants]
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"Seeds must be non-negative integers, got {s!r}.")
        out += [{**v, "name": f"{v['name']}_s{s}", "seed": s} for v in variants]
    return out


def replicate_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """{variant: [its runs]}: "mean_s1" joins "mean" when "mean" is among `names`; any other name is its own group."""
    names = list(names)
    groups: dict[str, list[str]] = {}
    for n in names:
        m = _SEED_SUFFIX.match(n)
        base = m["base"] if m and m["base"] in names else n
        groups.setdefault(base, []).append(n)
    return groups


def pooled_changes(grid_dir: str | Path, names: Sequence[str], *, against: str = "start",
                   metrics: dict[str, str] = CHANGE_METRICS, seed: int = 0):
    """held_out_changes over the seeds of each variant: per question, the mean over the variant's seeds minus the
    mean over `against`'s seeds (or the shared start), then the paired bootstrap over questions. Column "seeds" says
    how many runs each side averaged; read it with the per-seed rows of held_out_changes, which show whether the
    seeds agree. Variants whose runs have not all been evaluated are left out."""
    import numpy as np
    import pandas as pd

    from .. import probe

    grid_dir = Path(grid_dir)
    groups = replicate_groups(names)

    def per_question(runs: list[str]):
        frames = [_samples(grid_dir / r / "eval_samples_after.csv") for r in runs]
        for f in frames[1:]:
            if list(f["question"]) != list(frames[0]["question"]):
                raise ValueError(f"The runs {runs} were evaluated on different questions: they cannot be pooled.")
        return {m: np.mean([pd.to_numeric(f[col], errors="coerce").to_numpy(float) for f in frames], axis=0)
                for m, col in metrics.items() if all(col in f for f in frames)}  # a column older files lack: skipped

    def evaluated(runs):
        return all((grid_dir / r / "eval_samples_after.csv").exists() for r in runs)

    if against == "start":
        start = _samples(grid_dir / "eval_samples_start.csv")
        base = {m: pd.to_numeric(start[col], errors="coerce").to_numpy(float) for m, col in metrics.items()
                if col in start}
        base_runs = 1
    else:
        if against not in groups or not evaluated(groups[against]):
            raise FileNotFoundError(f"{against!r} has no evaluation in {grid_dir} yet: run the grid first.")
        base, base_runs = per_question(groups[against]), len(groups[against])
    rows = []
    for name, runs in groups.items():
        if name == against or not evaluated(runs):
            continue
        after = per_question(runs)
        for m in [m for m in metrics if m in after and m in base]:
            a, b = after[m], base[m]
            keep = np.isfinite(a) & np.isfinite(b)
            delta, lo, hi = probe.paired_bootstrap(a[keep], b[keep], seed=seed)
            rows.append({"variant": name, "vs": against, "metric": m, "against": float(b[keep].mean()),
                         "variant_mean": float(a[keep].mean()), "delta": delta, "ci95_lo": lo, "ci95_hi": hi,
                         "verdict": probe.verdict(lo, hi), "n": int(keep.sum()), "seeds": len(runs),
                         "seeds_against": base_runs})
    cols = ["variant", "vs", "metric", "against", "variant_mean", "delta", "ci95_lo", "ci95_hi", "verdict", "n",
            "seeds", "seeds_against"]
    return pd.DataFrame(rows, columns=cols)
