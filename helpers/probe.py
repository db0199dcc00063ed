"""The held-out probe: what GRPO itself changed, measured from the after-cold-start checkpoint.

The before/after evaluation of notebooks 01/02 compares the base model with the trained one, so the cold start's
gain hides GRPO's. The probe answers the narrower question: on a fixed set of held-out questions, how do the
greedy answers of the policy *after GRPO* differ from those of the same policy *after the cold start*?

    rows = probe_rows(cfg)                          # GSM8K test rows PROBE_OFFSET.. (never in the evaluations)
    start = run(model, tokenizer, rows, cfg)        # per question: format_ok, strict_correct, gold_answer_logprob…
    ... GRPO ...
    end = run(model, tokenizer, rows, cfg)
    changes(end, start)                             # after minus start, paired bootstrap 95 % interval per metric

Per question the probe records greedy strict format and accuracy (notebook 01's rewards), and the log-probability
of the gold answer after the model's own greedy reasoning, over the answer's own tokens and with the closing tag
(notebook 02's reward). The interval resamples questions, keeping each question's pair together, so a question that
is hard for both policies does not widen it. "within noise" means the interval contains 0.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from . import evaluation, runtime, training
from .config import RunConfig
from .tasks import GSM8K_PROBE_OFFSET as PROBE_OFFSET  # defined once, where the probe rows are chosen

PROBE_SIZE = 100
# metric name -> per-question column of evaluation.evaluate's DataFrame
PROBE_METRICS = {
    "format_rate": "format_ok",
    "strict_accuracy": "strict_correct",
    "lenient_accuracy": "lenient_correct",
    "gold_answer_logprob": "gold_answer_logprob",  # log P(gold answer tokens | prompt, own greedy reasoning)
    "gold_logprob": "gold_logprob",  # the whole target with its closing tag (the reward's span="target")
}


def probe_rows(cfg: RunConfig, n: int = PROBE_SIZE, offset: int = PROBE_OFFSET) -> list[dict]:
    """The held-out probe questions of cfg.task (helpers/tasks.py): GSM8K test rows offset..offset+n (held out from
    training, the train split, and from the evaluations, the first rows), or the arith task's probe split."""
    from . import tasks

    return tasks.probe_rows(cfg.task, n, cfg.dataset_source, offset)  # it refuses an offset that reaches the evals


def run(model, tokenizer, rows: Sequence[dict], cfg: RunConfig, *, backend: str = "hf", lora_path=None,
        label: str = "probe"):
    """Per-question DataFrame of the probe: greedy answers (cfg.eval_max_new_tokens, cfg.eval_batch_size) scored
    as in the evaluations (evaluation.evaluate), plus the gold answer's log-probability after them."""
    _, df = evaluation.evaluate(model, tokenizer, rows, cfg, backend=backend, label=label, lora_path=lora_path)
    return df


def _floats(column):
    """A probe column as floats. Probe CSVs are read back with keep_default_na=False (an answer "NA" stays text), so a
    NaN score written as an empty cell comes back as "": that is NaN again here."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.astype(float)
    return pd.Series([float("nan") if v == "" else float(v) for v in column], index=column.index, dtype=float)


def summary(df, metrics: dict[str, str] = PROBE_METRICS) -> dict[str, float]:
    """Mean of each probe metric (name -> per-question column) over the questions (NaN cells skipped)."""
    return {name: float(_floats(df[col]).mean()) for name, col in metrics.items() if col in df}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                     ) -> tuple[float, float, float]:
    """(mean of a - b, 2.5 %, 97.5 % percentile of the bootstrap mean), resampling pairs (questions) together."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length, non-empty samples (got {a.size} and {b.size}).")
    d = a - b
    if not np.isfinite(d).all():
        raise ValueError("paired_bootstrap got non-finite values: score the probe before comparing.")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    """'up' / 'down' when the 95 % interval excludes 0, else 'within noise'."""
    return "up" if lo > 0 else "down" if hi < 0 else "within noise"


def changes(after, start, metrics: Sequence[str] | None = None, *, seed: int = 0,
            names: tuple[str, str] = ("start", "after"), columns: dict[str, str] = PROBE_METRICS,
            key: str = "question", dropna: bool = False):
    """One row per metric: the two means, their difference (after minus start, paired by `key`), the
    bootstrap 95 % interval and the verdict. `after` and `start` are probe DataFrames of the same questions;
    `columns` maps metric names to their per-question columns (PROBE_METRICS; the writing task has its own).
    `dropna=True` pairs only the rows scored in both (column "n" says how many); otherwise a NaN is an error."""
    import numpy as np
    import pandas as pd

    if list(after[key]) != list(start[key]):
        raise ValueError("The two probes were run on different questions: they cannot be paired.")
    rows = []
    for name in (metrics if metrics is not None else tuple(columns)):
        col = columns[name]
        if col not in after or col not in start:
            continue
        a, b = _floats(after[col]).to_numpy(), _floats(start[col]).to_numpy()
        if dropna:
            keep = np.isfinite(a) & np.isfinite(b)
            a, b = a[keep], b[keep]
        delta, lo, hi = paired_bootstrap(a, b, seed=seed)
        rows.append({"metric": name, names[0]: float(b.mean()), names[1]: float(a.mean()), "delta": delta,
                     "ci95_lo": lo, "ci95_hi": hi, "verdict": verdict(lo, hi), "n": int(a.size)})
    return pd.DataFrame(rows)


def group_changes(after, start, groups: Sequence, column: str = "strict_correct", *, seed: int = 0,
                  names: tuple[str, str] = ("after cold start", "after GRPO")):
    """One row per group (e.g. the arith level of each probe question, `groups` aligned with the probe's rows; a
    single group "all" when `groups` is None): the means of `column` in `start` and `after`, their paired difference
    with its bootstrap 95 % interval and verdict, and n. Plus a last row "all" over every question."""
    import numpy as np
    import pandas as pd

    if list(after["question"]) != list(start["question"]):
        raise ValueError("The two probes were run on different questions: they cannot be paired.")
    a, b = _floats(after[column]).to_numpy(), _floats(start[column]).to_numpy()
    labels = np.asarray(["all"] * len(a) if groups is None else [str(g) for g in groups], dtype=object)
    if labels.size != a.size:
        raise ValueError(f"{labels.size} group labels for {a.size} probe rows.")
    rows = []
    for group in [*sorted(set(labels) - {"all"}), "all"]:
        keep = np.ones(a.size, bool) if group == "all" else labels == group
        delta, lo, hi = paired_bootstrap(a[keep], b[keep], seed=seed)
        rows.append({"group": group, names[0]: float(b[keep].mean()), names[1]: float(a[keep].mean()),
                     "delta": delta, "ci95_lo": lo, "ci95_hi": hi, "verdict": verdict(lo, hi), "n": int(keep.sum())})
    return pd.DataFrame(rows)


def cached(path: str | Path, compute):
    """The probe DataFrame saved at `path`, else `compute()` saved there (a Colab disconnect loses nothing)."""
    import pandas as pd

    path = Path(path)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    df = compute()
    if runtime.is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        runtime.atomic_write_csv(path, df)
    return df


def load(run_dir: str | Path, label: str):
    """A run's saved probe_<label>.csv ("start", "end"), or None when that run has none."""
    import pandas as pd

    path = Path(run_dir) / f"probe_{label}.csv"
    return pd.read_csv(path, keep_default_na=False) if path.exists() else None


def history(run_dir: str | Path, metrics: dict[str, str] = PROBE_METRICS):
    """Probe metric means against GRPO step from a run directory: probe_start.csv at step 0, probe.csv (the
    checkpoints), probe_end.csv at the run's final step (train_summary.json). Empty when nothing was probed."""
    import json

    import pandas as pd

    run_dir = Path(run_dir)
    rows = []
    if (run_dir / "probe_start.csv").exists():
        rows.append({"step": 0, **summary(pd.read_csv(run_dir / "probe_start.csv", keep_default_na=False), metrics)})
    if (run_dir / "probe.csv").exists():
        try:
            rows += pd.read_csv(run_dir / "probe.csv").drop(columns=["seconds"], errors="ignore").to_dict("records")
        except pd.errors.EmptyDataError:  # the run ended before any checkpoint was probed
            pass
    if (run_dir / "probe_end.csv").exists() and (run_dir / "train_summary.json").exists():
        steps = json.loads((run_dir / "train_summary.json").read_text()).get("steps")
        if steps is not None:
            rows.append({"step": steps, **summary(pd.read_csv(run_dir / "probe_end.csv", keep_default_na=False),
                                                  metrics)})
    if not rows:
        return pd.DataFrame(columns=["step", *metrics])
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def ProbeCallback(path: str | Path, tokenizer, rows: Sequence[dict], cfg: RunConfig, *,  # noqa: N802
                  samples_dir: str | Path | None = None, every: int | None = None, run_fn=None,
                  metrics: dict[str, str] = PROBE_METRICS):
    """A TrainerCallback that runs the probe on the policy being trained at every `every`-th step (default: each
    checkpoint save) and appends {step, metric means, seconds} to `path` (probe.csv; the per-question answers go
    to samples_dir/probe_step<N>.csv). Step 0 and the last step are not recorded here: those are the start probe
    (after the cold start) and the end probe, run once before and after training. Main process only, hf backend (on Unsloth, vLLM generates from saved adapters: probe those).
    `run_fn(model, rows, label)` -> per-question DataFrame replaces the GSM8K probe (`run`); `metrics` maps the
    names recorded in probe.csv to its columns."""
    from transformers import TrainerCallback

    class _Probe(TrainerCallback):
        def __init__(self):
            self.csv: training.MetricsCSV | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.csv = training.MetricsCSV(path)
                self.csv.truncate_after(state.global_step)

        def _due(self, state) -> bool:  # the last step is the end probe's (Experiment.probe("end")), not ours
            last = getattr(state, "max_steps", 0) or 0
            return 0 < state.global_step and not (last and state.global_step >= last) and (
                state.global_step % every == 0 if every else True)

        def on_save(self, args, state, control, model=None, **kwargs):
            if not every and self.csv is not None and state.is_world_process_zero and model is not None \
                    and self._due(state):
                self._record(state.global_step, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and self.csv is not None and state.is_world_process_zero and model is not None and self._due(state):
                self._record(state.global_step, model)

        def _record(self, step: int, model) -> None:
            t0 = time.time()
            label = f"probe step {step}"
            df = run_fn(model, rows, label) if run_fn else run(model, tokenizer, rows, cfg, label=label)
            if samples_dir is not None:
                runtime.atomic_write_csv(Path(samples_dir) / f"probe_step{step:04d}.csv", df)
            self.csv.append({"step": step, **summary(df, metrics), "seconds": round(time.time() - t0, 1)})

    return _Probe()
