"""Reference results: the small files a finished notebook run wrote, committed with their provenance, and shown
beside the reader's own run.

A notebook never types a result into its prose. Its "What you should see" cells call `show(...)`, which reads the
committed copy of the file the reference run wrote (`results/<preset>/<run name>/<file>`), prints where it came
from (command, UTC date, machine, preset, commit), and, when the reader's run has written the same file, stacks the
two under a `run` column ("reference" / "yours"). `save` makes such a copy from a run directory; it keeps only
tables and JSON (no checkpoints, adapters or executed notebooks) and refuses large files.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

REFERENCE_ROOT = Path(__file__).resolve().parent.parent / "results"
KEPT_SUFFIXES = (".csv", ".json")
SKIPPED_PARTS = ("checkpoint", "lora", "merged", "executed_")
MAX_FILE_BYTES = 1_500_000
PROVENANCE = "provenance.json"


class ReferenceError(FileNotFoundError):
    """A reference result that should be committed is missing."""


def _kept(path: Path, run_dir: Path) -> bool:
    rel = path.relative_to(run_dir)
    return (path.suffix in KEPT_SUFFIXES and path.is_file()
            and not any(part in p for p in rel.parts for part in SKIPPED_PARTS))


def _commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_description() -> str:
    """The CPU's model name, core count and bf16 units (or the GPU's name): which machine a number came from."""
    from .plots import hardware_label
    from .runtime import cpu_model_name

    name = cpu_model_name()
    return f"{name} · {hardware_label()}"


def save(run_dir: str | Path, *, command: str, preset: str, name: str | None = None, wall_seconds: float | None = None,
         commit: str | None = None, note: str = "", root: str | Path = REFERENCE_ROOT) -> Path:
    """Copy a finished run's tables and JSON into `root/preset/name` with a provenance.json; returns that folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReferenceError(f"No run directory {run_dir}: run the notebook first.")
    name = name or run_dir.name
    dest = Path(root) / preset / name
    files = sorted(p for p in run_dir.rglob("*") if _kept(p, run_dir))
    too_big = [str(p.relative_to(run_dir)) for p in files if p.stat().st_size > MAX_FILE_BYTES]
    if too_big:
        raise ValueError(f"Files over {MAX_FILE_BYTES} bytes would be committed: {too_big}")
    if dest.exists():
        shutil.rmtree(dest)
    for p in files:
        target = dest / p.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    label = ""
    summary = run_dir / "summary.json"
    if summary.exists():
        label = json.loads(summary.read_text()).get("label", "")
    newest = max((p.stat().st_mtime for p in files), default=None)
    prov = {
        "run_name": name, "preset": preset, "command": command,
        "date_utc": datetime.fromtimestamp(newest, timezone.utc).strftime("%Y-%m-%d %H:%M") if newest else None,
        "machine": machine_description(), "label": label,
        "commit": commit or _commit(Path(__file__).resolve().parent.parent),
        "wall_seconds": wall_seconds, "note": note, "files": [str(p.relative_to(run_dir)) for p in files],
    }
    (dest / PROVENANCE).write_text(json.dumps(prov, indent=1) + "\n")
    return dest


def folder(name: str, preset: str = "cpu", root: str | Path = REFERENCE_ROOT) -> Path:
    """The committed reference folder of run `name`; the cpu one when `preset` has none (smoke, or a GPU preset
    nobody has committed a run of yet)."""
    for p in (preset, "cpu"):
        path = Path(root) / p / name
        if (path / PROVENANCE).exists():
            return path
    raise ReferenceError(f"No committed reference run {name!r} under {Path(root)}/{preset} or /cpu "
                         "(scripts/save_reference.py writes one from a finished run).")


def provenance(name: str, preset: str = "cpu", root: str | Path = REFERENCE_ROOT) -> dict:
    return json.loads((folder(name, preset, root) / PROVENANCE).read_text())


def describe(name: str, preset: str = "cpu", root: str | Path = REFERENCE_ROOT) -> str:
    """One line: which run, which command, when, on which machine."""
    p = provenance(name, preset, root)
    wall = f", {p['wall_seconds'] / 60:.1f} min wall" if p.get("wall_seconds") else ""
    note = f" ({p['note']})" if p.get("note") else ""
    return (f"reference {p['run_name']!r} ({p['preset']} preset, {p['date_utc']} UTC, commit {p['commit']}{wall}): "
            f"`{p['command']}` on {p['machine']}{note}")


def read(name: str, relpath: str, preset: str = "cpu", root: str | Path = REFERENCE_ROOT):
    """A committed reference file: a DataFrame for .csv, the parsed object for .json."""
    path = folder(name, preset, root) / relpath
    if not path.exists():
        raise ReferenceError(f"The reference run {name!r} has no {relpath} (in {path.parent}).")
    return _read(path)


def _read(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False)


def side_by_side(ref, yours=None, columns: Sequence[str] | None = None):
    """Stack a reference table and the reader's (if any) under a leading `run` column."""
    import pandas as pd

    frames = []
    for who, df in (("reference", ref), ("yours", yours)):
        if df is None:
            continue
        df = pd.DataFrame(df).copy()
        if columns:
            df = df[[c for c in columns if c in df.columns]]
        df.insert(0, "run", who)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def show(relpath: str, name: str, *, yours: str | Path | None = None, preset: str = "cpu",
         columns: Sequence[str] | None = None, root: str | Path = REFERENCE_ROOT, quiet: bool = False):
    """The reference run's `relpath` (a CSV) beside the reader's own copy in run directory `yours`, if written."""
    if not quiet:
        print(describe(name, preset, root))
    ref = read(name, relpath, preset, root)
    mine = None
    if yours is not None and (Path(yours) / relpath).exists():
        mine = _read(Path(yours) / relpath)
    return side_by_side(ref, mine, columns)


TRAINING_COLUMNS = {
    "rewards/correctness_reward/mean": "correctness reward",
    "rewards/strict_format_reward/mean": "strict-format reward",
    "completions/mean_length": "completion length (tokens)",
    "frac_reward_zero_std": "groups with no reward spread",
    "reward_std": "within-group reward std",
}


def training_summary(metrics, k: int = 6, columns: dict[str, str] | None = None):
    """Mean of each logged column over the first and the last `k` steps, and the median step time (s)."""
    import pandas as pd

    df = metrics if isinstance(metrics, pd.DataFrame) else pd.read_csv(metrics)
    columns = dict(columns or TRAINING_COLUMNS)
    columns.update({c: c.split("/")[0] + " raw log-prob of the gold answer" for c in df.columns
                    if c.endswith("/raw_logprob") and c not in columns})
    rows = []
    for col, label in columns.items():
        if col in df.columns:
            x = pd.to_numeric(df[col], errors="coerce").dropna()
            if len(x):
                rows.append({"metric": label, f"first {k} steps": x.head(k).mean(), f"last {k} steps": x.tail(k).mean()})
    if "time" in df.columns and len(df) > 1:
        dt = pd.to_numeric(df["time"], errors="coerce").diff().dropna()
        rows.append({"metric": "seconds per step (median)", f"first {k} steps": dt.head(k).median(),
                     f"last {k} steps": dt.tail(k).median()})
    return pd.DataFrame(rows)


def show_training(name: str, *, yours: str | Path | None = None, preset: str = "cpu", k: int = 6,
                  root: str | Path = REFERENCE_ROOT):
    """First vs last steps of the reference run's metrics.csv, beside the reader's."""
    print(describe(name, preset, root))
    ref = training_summary(folder(name, preset, root) / "metrics.csv", k)
    mine = None
    if yours is not None and (Path(yours) / "metrics.csv").exists():
        mine = training_summary(Path(yours) / "metrics.csv", k)
    return side_by_side(ref, mine)


BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
LEARNING_BENCHMARK = "learning_arith_3seeds_faststep_2026-12-04.json"
# The cpu recipe's rule-vs-logprob benchmarks by the logprob reward's span (helpers/logprob.py SPANS): 3 seeds over the
# whole target (2026-12-04); 2 seeds over the answer span (2026-12-05), paired with the same rule runs (seeds 1-2).
LEARNING_BENCHMARKS = {"whole target": LEARNING_BENCHMARK,
                       "answer span": "learning_arith_2seeds_answerspan_2026-12-05.json"}


def learning_benchmark(name: str = LEARNING_BENCHMARK, root: str | Path = BENCHMARK_DIR) -> dict:
    """`benchmarks/learning.py --seeds N`'s JSON as tables: "per_seed" (each seed's after-GRPO minus after-cold-start
    change per reward, paired interval), "pooled" (the same over all seeds' pairs), "across_seeds" (means, sd and
    logprob minus rule), plus "machine" and "minutes"."""
    import pandas as pd

    path = Path(root) / name
    if not path.exists():
        raise ReferenceError(f"No benchmark result {path}: run `python benchmarks/learning.py --seeds 3 --json ...`.")
    d = json.loads(path.read_text())
    per_seed = [{"seed": int(seed), "reward": reward, **{k: v for k, v in row.items() if k != reward}}
                for seed, by_reward in d["seeds"].items() for reward, rows in by_reward.items()
                if isinstance(rows, list) for row in rows]
    return {"per_seed": pd.DataFrame(per_seed), "pooled": pd.DataFrame(d["across_seeds"]["changes"]),
            "across_seeds": pd.DataFrame(d["across_seeds"]["table"]), "machine": d.get("machine", {}),
            "minutes": d.get("minutes", {}), "file": str(path.relative_to(path.parents[2])) if len(path.parents) > 2
            else str(path)}
