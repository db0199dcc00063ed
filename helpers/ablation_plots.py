"""Figures of an ablation grid (helpers.ablations): curves overlaid per variant, the training-dynamics
probe, and bars of the final metrics. Each figure is labelled (model, steps, hardware) and saved as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .plots import DOWN, NOISE, UP, color_for, metric_title, pyplot, save_figure, training_curves, wrap

CURVE_COLUMNS = ("reward", "rewards/correctness_reward/mean", "completions/mean_length", "kl", "reward_std",
                 "frac_reward_zero_std")
DYNAMICS_COLUMNS = ("own/loglik", "own/ppl", "own/entropy", "ref/loglik", "ref/ppl", "ref/entropy")
BAR_METRICS = ("strict_accuracy", "lenient_accuracy", "gold_ppl_median", "train_completion_length", "reward_std",
               "frac_reward_zero_std", "kl", "wall_time_s")


def variant_files(grid_dir: str | Path, name: str, names: Sequence[str] | None = None) -> dict[str, Path]:
    """{variant: <grid>/<variant>/<name>} for the variants that have that file (in `names` order if given)."""
    grid_dir = Path(grid_dir)
    names = list(names) if names is not None else sorted(p.name for p in grid_dir.iterdir() if p.is_dir())
    return {n: grid_dir / n / name for n in names if (grid_dir / n / name).exists()}


def variant_curves(grid_dir: str | Path, label: str, save_to: Sequence[str | Path] = (), *, smooth: int = 3,
                   names: Sequence[str] | None = None, columns: Sequence[str] = CURVE_COLUMNS):
    """Training curves (metrics.csv) of every variant overlaid: total reward, training-sample correctness
    (the logged, unweighted correctness reward: 2 × accuracy), completion length, KL, reward spread."""
    runs = variant_files(grid_dir, "metrics.csv", names)
    if not runs:
        raise FileNotFoundError(f"No variant in {grid_dir} has a metrics.csv yet: run the grid first.")
    return training_curves(runs, label, save_to=save_to, smooth=smooth, columns=list(columns))


def dynamics_curves(grid_dir: str | Path, label: str, save_to: Sequence[str | Path] = (), *,
                    names: Sequence[str] | None = None, columns: Sequence[str] = DYNAMICS_COLUMNS):
    """dynamics.csv of every variant overlaid: log-likelihood, perplexity and entropy at each checkpoint of
    the gold answer after the start policy's reasoning ("own") and of reference solutions ("ref")."""
    runs = variant_files(grid_dir, "dynamics.csv", names)
    if not runs:
        raise FileNotFoundError(f"No variant in {grid_dir} has a dynamics.csv yet: run the grid first.")
    return training_curves(runs, label, save_to=save_to, smooth=1, columns=list(columns))


def final_bars(table, label: str, save_to: Sequence[str | Path] = (), metrics: Sequence[str] = BAR_METRICS):
    """One panel per metric, one horizontal bar per variant (rows of ablations.aggregate's table)."""
    plt = pyplot()
    import math

    metrics = [m for m in metrics if m in table and table[m].notna().any()]
    ncol = min(4, max(1, len(metrics)))
    nrow = max(1, -(-len(metrics) // ncol))
    height = 0.9 + 0.28 * len(table)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, height * nrow), squeeze=False)
    names = [str(v) for v in table["variant"]]
    from .ablations.table import replicate_groups

    # the colour of each variant in the training curves (every seed of a variant alike); "start" the cold start's
    position = {run: k for k, runs in enumerate(replicate_groups([n for n in names if n != "start"]).values())
                for run in runs}
    colours = [color_for(n, position.get(n, 0)) for n in names]
    for i, (ax, metric) in enumerate(zip(axes.flat, metrics)):
        values = [float(x) if x is not None else math.nan for x in table[metric]]
        fraction = metric.endswith(("accuracy", "rate", "zero_std"))  # shares: shown in %, on a 0-1 axis
        ax.barh(range(len(names)), [0 if math.isnan(x) else x for x in values], color=colours, alpha=0.85)
        for y, x in enumerate(values):
            text = "n/a" if math.isnan(x) else (f"{x:.0%}" if fraction else f"{x:.3g}")
            ax.text(0 if math.isnan(x) else x, y, " " + text, va="center", fontsize=7)
        if fraction:
            ax.set_xlim(0, 1.2)
        else:
            ax.set_xlim(left=min([0.0] + [x for x in values if not math.isnan(x)]))
        ax.set_yticks(range(len(names)), names if i % ncol == 0 else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


CHANGE_TITLES = {"strict_accuracy": "strict accuracy", "gold_answer_logprob": "log P(gold answer | own reasoning)",
                 "format_rate": "completions in the tag format", "completion_tokens": "completion length (tokens)"}


def change_panels(tables, label: str, save_to: Sequence[str | Path] = ()):
    """Paired differences of an ablation grid (ablations.held_out_changes tables, one per row of panels: e.g. each
    variant minus the shared start, then minus the control): one panel per metric, one interval per variant,
    green above 0, red below, grey across it (within noise)."""
    plt = pyplot()
    tables = [t for t in tables if len(t)]
    metrics = [m for m in CHANGE_TITLES if any(m in set(t["metric"]) for t in tables)]
    if not tables or not metrics:
        raise ValueError("Nothing to draw: no paired differences yet (run the grid first).")
    nvar = max(t["variant"].nunique() for t in tables)
    fig, axes = plt.subplots(len(tables), len(metrics), squeeze=False,
                             figsize=(3.4 * len(metrics), (0.9 + 0.36 * nvar) * len(tables) + 0.5))
    for r, table in enumerate(tables):
        vs = str(table["vs"].iloc[0])
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            t = table[table["metric"] == metric].reset_index(drop=True)
            ys = list(range(len(t)))[::-1]
            for y, (_, row) in zip(ys, t.iterrows()):
                lo, hi, d = float(row["ci95_lo"]), float(row["ci95_hi"]), float(row["delta"])
                colour = UP if lo > 0 else DOWN if hi < 0 else NOISE
                ax.errorbar(d, y, xerr=[[d - lo], [hi - d]], fmt="o", color=colour, capsize=3)
                ax.text(d, y + 0.2, f"{d:+.3g}", ha="center", fontsize=7)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(ys, list(t["variant"]) if c == 0 else [""] * len(t), fontsize=8)
            ax.set_ylim(-0.7, max(len(t) - 0.3, 0.7))
            ax.set_title(f"{CHANGE_TITLES[metric]}\nminus {vs}", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
    fig.suptitle(wrap(label + " · 95 % paired intervals over the evaluation questions", 110), fontsize=9)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def report(grid_dir: str | Path, table, label: str, figures_dir: str | Path | None = None,
           prefix: str = "03") -> dict[str, Path]:
    """Every ablation figure, saved in the grid directory (and `figures_dir`); returns {name: path}."""
    from .ablations.table import replicate_groups

    grid_dir = Path(grid_dir)
    names = [n for n in table["variant"] if n != "start"]
    first_seeds = list(replicate_groups(names))  # curves: one run per variant (its first seed), else unreadable

    def paths(name: str) -> list[Path]:
        return [d / f"{prefix}_{name}.png" for d in (grid_dir, Path(figures_dir) if figures_dir else None) if d]

    saved = {}
    if variant_files(grid_dir, "metrics.csv", first_seeds):
        variant_curves(grid_dir, label, paths("ablation_curves"), names=first_seeds)
        saved["curves"] = grid_dir / f"{prefix}_ablation_curves.png"
    if variant_files(grid_dir, "dynamics.csv", first_seeds):
        dynamics_curves(grid_dir, label, paths("ablation_dynamics"), names=first_seeds)
        saved["dynamics"] = grid_dir / f"{prefix}_ablation_dynamics.png"
    if len(table):
        final_bars(table, label, paths("ablation_bars"))
        saved["bars"] = grid_dir / f"{prefix}_ablation_bars.png"
    if (grid_dir / "eval_samples_start.csv").exists() and variant_files(grid_dir, "eval_samples_after.csv", names):
        from .ablations.table import CONTROL, pooled_changes  # over the seeds of each variant (one seed: as is)

        tables = [pooled_changes(grid_dir, names)]
        if CONTROL in names and (grid_dir / CONTROL / "eval_samples_after.csv").exists():
            tables.append(pooled_changes(grid_dir, names, against=CONTROL))
        change_panels(tables, label, paths("ablation_changes"))
        saved["changes"] = grid_dir / f"{prefix}_ablation_changes.png"
    return saved
