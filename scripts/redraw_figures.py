"""Redraw notebooks 01 and 02's committed figures from the files their runs wrote (metrics.csv, eval tables, probe
and transfer CSVs), with the course's palette, without loading a model. The label of each figure comes from the
run's own summary.json (model, steps, hardware of the machine that ran it) plus its task.

    python scripts/redraw_figures.py --runs-dir ~/grpo_runs/logprob-reasoning --out figures
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from helpers import config, plots, probe  # noqa: E402


def run_label(run_dir: Path) -> str:
    cfg = json.loads((run_dir / "config.json").read_text())
    parts = json.loads((run_dir / "summary.json").read_text())["label"].split(" · ")
    if not any(p.startswith("task ") for p in parts):
        parts.insert(1, f"task {cfg['task']}")
    return " · ".join(parts)


def by_level(run_dir: Path):
    cfg = config.RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    rows = probe.probe_rows(cfg, cfg.probe_size)
    levels = [f"level {r['level']}" for r in rows] if all("level" in r for r in rows) else None
    return probe.group_changes(probe.load(run_dir, "end"), probe.load(run_dir, "start"), levels, "strict_correct")


def changes(run_dir: Path):
    return pd.read_csv(run_dir / "probe_changes.csv")


def draw_run(run_dir: Path, prefix: str, kind: str, out: Path, probe_figure: bool = True) -> list[Path]:
    label = run_label(run_dir)
    to = lambda name: [out / f"{prefix}_{name}.png"]  # noqa: E731
    plots.training_curves({kind: run_dir / "metrics.csv"}, label, to("training_curves"), smooth=3)
    table = pd.read_csv(run_dir / "eval_table.csv").replace({"model": {"before": "base (before)",
                                                                        "after": f"after {kind}"}})
    plots.accuracy_bars(table, label, to("before_after"))
    if probe_figure:  # notebook 02 draws its probe beside 01's instead (main)
        plots.probe_curves({kind: probe.history(run_dir)}, label, to("probe"), changes={kind: changes(run_dir)})
    plots.change_intervals(by_level(run_dir), label + " · probe strict accuracy by level", save_to=to("probe_levels"))
    plots.change_intervals(pd.read_csv(run_dir / "transfer_changes.csv"), label + " · transfer",
                           row_label=["set", "metric"], save_to=to("transfer"))
    names = ("training_curves", "before_after", "probe", "probe_levels", "transfer")
    return [out / f"{prefix}_{n}.png" for n in names if probe_figure or n != "probe"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "figures"))
    ap.add_argument("--rule-run", default="01_rule_based")
    ap.add_argument("--logprob-run", default="02_logprob")
    args = ap.parse_args(argv)
    runs, out = Path(args.runs_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rule, lp = runs / args.rule_run, runs / args.logprob_run
    written = draw_run(rule, "01", "01 rule", out) + draw_run(lp, "02", "02 logprob", out, probe_figure=False)
    label = run_label(lp)
    lp_col = [c for c in pd.read_csv(lp / "metrics.csv", nrows=1).columns if c.endswith("/raw_logprob")]
    plots.training_curves({"01 rule": rule / "metrics.csv", "02 logprob": lp / "metrics.csv"}, label,
                          [out / "02_vs_01_curves.png"], smooth=3, columns=[
                              "rewards/correctness_reward/mean", "rewards/strict_format_reward/mean", "reward",
                              "completions/mean_length", "kl", *lp_col])
    if (lp / "comparison_01_vs_02.csv").exists():
        plots.accuracy_bars(pd.read_csv(lp / "comparison_01_vs_02.csv"), label, [out / "02_vs_01_accuracy.png"])
        written.append(out / "02_vs_01_accuracy.png")
    plots.probe_curves({"01 rule": probe.history(rule), "02 logprob": probe.history(lp)}, label,
                       [out / "02_probe.png"], changes={"01 rule": changes(rule), "02 logprob": changes(lp)})
    written += [out / "02_vs_01_curves.png", out / "02_probe.png"]
    for p in written:
        print("wrote", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
