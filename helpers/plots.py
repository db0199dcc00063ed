"""Every figure the notebooks show. Each is saved as PNG (run directory, optionally figures/) and
labelled with what produced it: model, steps and hardware."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence


def hardware_label() -> str:
    from .runtime import has_cuda

    if has_cuda():
        import torch

        return torch.cuda.get_device_name(0)
    import os

    from .runtime import cpu_bf16_units

    units = cpu_bf16_units()  # bf16 matrix units decide the CPU's speed and the run's precision: name them
    return f"CPU ({os.cpu_count()} cores, {platform.machine()}{', ' + ' + '.join(units) if units else ''})"


def model_label(model: str, precision: str | None = None) -> str:
    """The model's name as figures show it; the embedded model says what its weights really are: the Q4_1 GGUF
    dequantized to the run's `precision` (a RunConfig.precision; None or "auto": as this machine resolves "auto")."""
    from .config import EMBEDDED_MODEL
    from .runtime import resolve_precision

    if model == EMBEDDED_MODEL:
        return f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to {resolve_precision(precision or 'auto')})"
    return model.split("/")[-1]


def run_label(model: str, steps: int | str, hardware: str | None = None, precision: str | None = None,
              task: str | None = None) -> str:
    task_part = f" · task {task}" if task else ""
    return f"{model_label(model, precision)}{task_part} · {steps} steps · {hardware or hardware_label()}"


# One colour per reward and per run kind, in every figure of the course. `color_for` picks it from a legend name.
PALETTE = {
    "base": "#7f7f7f",       # the model before any training
    "cold start": "#bcbd22",  # after the cold-start SFT (where GRPO starts from)
    "rule": "#1f77b4",        # GRPO with the rule rewards (notebook 01)
    "logprob": "#d95f02",     # GRPO with the logprob reward (notebook 02)
    "sft": "#2ca02c",         # supervised fine-tuning arms (notebook 05)
    "reference": "#9467bd",   # a committed reference run, drawn beside the reader's
}
_KEYWORDS = (("logprob", "logprob"), ("log-prob", "logprob"), ("rule", "rule"), ("base", "base"),
             ("before", "base"), ("cold", "cold start"), ("start", "cold start"), ("sft", "sft"),
             ("reference", "reference"))
_FALLBACK = ("#17becf", "#8c564b", "#e377c2", "#ff7f0e", "#1b9e77", "#7570b3")
UP, DOWN, NOISE = "#2ca02c", "#d62728", "#7f7f7f"  # an interval above 0, below 0, across it


def color_for(name: str, i: int = 0) -> str:
    """The palette colour of a legend name ("01 rule", "02 logprob", "base (before)", "sft"...), else the i-th
    fallback colour."""
    low = str(name).lower()
    for key, kind in _KEYWORDS:
        if key in low:
            return PALETTE[kind]
    return _FALLBACK[i % len(_FALLBACK)]


METRIC_TITLES = {
    "reward": ("total reward (weighted sum)", "reward"),
    "reward_std": ("within-group reward spread", "mean std of r in a group"),
    "frac_reward_zero_std": ("groups with no reward spread", "share of groups"),
    "completions/mean_length": ("completion length", "tokens"),
    "kl": ("KL(policy ‖ reference)", "nats per token"),
    "rewards/correctness_reward/mean": ("correctness reward", "mean reward (2 = right)"),
    "rewards/strict_format_reward/mean": ("strict-format reward", "mean reward (max 0.5)"),
    "rewards/soft_format_reward/mean": ("soft-format reward", "mean reward (max 0.5)"),
    "rewards/tag_count_reward/mean": ("tag-count reward", "mean reward (max 0.5)"),
    "rewards/integer_answer_reward/mean": ("integer-answer reward", "mean reward (max 0.5)"),
}


def metric_title(col: str) -> tuple[str, str]:
    """(panel title, y label) of a metrics.csv column: readable words, not raw keys."""
    if col in METRIC_TITLES:
        return METRIC_TITLES[col]
    if col.endswith("/raw_logprob"):
        return "log P(gold | own reasoning), raw", "nats"
    if col.startswith("rewards/") and col.endswith("/mean"):
        return col[len("rewards/"):-len("/mean")].replace("_", " "), "mean reward"
    return col.replace("/", " · ").replace("_", " "), ""


def wrap(text: str, width: int = 90) -> str:
    """A figure title on as many lines as it needs: long labels are never cut off."""
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def pyplot():
    import matplotlib

    if not _in_notebook():
        matplotlib.use("Agg")  # headless (CLI, tests): draw to files only
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def save_figure(fig, paths: Sequence[str | Path]) -> list[Path]:
    out = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110, bbox_inches="tight")
        out.append(p)
    return out


def _smooth(series, window: int):
    return series.rolling(window, min_periods=1).mean() if window > 1 else series


def load_metrics(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No metrics at {path}: has this run trained yet?")
    return pd.read_csv(path)


def training_curves(runs: dict[str, str | Path], label: str, save_to: Sequence[str | Path] = (),
                    smooth: int = 1, columns: Sequence[str] | None = None):
    """One panel per metric (each reward component, total reward, completion length, KL), runs overlaid.

    `runs` maps a legend name to a metrics.csv path.
    """
    plt = pyplot()
    frames = {name: load_metrics(p) for name, p in runs.items()}
    if columns is None:
        cols: list[str] = []
        for df in frames.values():
            cols += [c for c in df.columns if c.startswith("rewards/") and c.endswith("/mean") and c not in cols]
        cols += [c for c in ("reward", "completions/mean_length", "kl") if any(c in df for df in frames.values())]
    else:
        cols = list(columns)
    # a panel nothing logged (kl at beta = 0: TRL computes no KL term) is left out, not drawn empty
    dropped = [c for c in cols if not any(c in df and df[c].notna().any() for df in frames.values())]
    cols = [c for c in cols if c not in dropped] or cols[:1]
    ncol = min(3, max(1, len(cols)))
    nrow = max(1, -(-len(cols) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        logged = [name for name, df in frames.items() if col in df and df[col].notna().any()]
        for i, name in enumerate(frames):
            if name in logged:
                # dashes per run: two runs with identical curves (sum_only vs mean_only) stay both visible
                ax.plot(frames[name]["step"], _smooth(frames[name][col], smooth), label=name, lw=1.8 - 0.3 * (i % 3),
                        color=color_for(name, i), ls=("-", "--", "-.", ":")[i % 4])
        title, ylabel = metric_title(col)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    if len(frames) > 1:
        axes.flat[0].legend(fontsize=8)
    if dropped:
        label = f"{label} (not logged: {', '.join(dropped)}{'; β = 0: no KL term' if 'kl' in dropped else ''})"
    fig.suptitle(wrap(label, 40 * ncol), fontsize=10)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def _grouped_bars(ax, table, columns: Sequence[str], fmt: str, names: Sequence[str] | None = None):
    """One group of bars per column, one bar per row of `table` (a model), each bar labelled with `fmt`."""
    import numpy as np

    x = np.arange(len(columns))
    width = 0.8 / max(1, len(table))
    for i, (_, row) in enumerate(table.iterrows()):
        vals = [row[c] for c in columns]
        yerr = None
        if "n" in row and fmt.endswith("%}"):  # shares of n questions: a 95 % Wilson interval on each bar
            lo_hi = [wilson(v, int(row["n"])) for v in vals]
            yerr = [[v - lo for v, (lo, _) in zip(vals, lo_hi)], [hi - v for v, (_, hi) in zip(vals, lo_hi)]]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=str(row["model"]),
                      color=color_for(row["model"], i), yerr=yerr, capsize=3 if yerr else 0, ecolor="0.3")
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, fmt.format(v), ha="left", va="bottom", fontsize=8)
    ax.set_xticks(x, list(names) if names is not None else [c.replace("_", " ") for c in columns])


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a share p of n: honest at 0 % and 100 % and with few questions."""
    import math

    if n <= 0 or p != p:
        return (p, p)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_bars(table, label: str, save_to: Sequence[str | Path] = (),
                  metrics: Sequence[str] = ("strict_accuracy", "lenient_accuracy", "format_rate")):
    """Grouped bars: one group per metric, one bar per evaluated model (e.g. before / after)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(metrics), 3.4))
    _grouped_bars(ax, table, metrics, "{:.0%}")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"share of {int(table['n'].iloc[0])} questions\n(bars: 95 % Wilson interval)")
    ax.legend(fontsize=8)
    ax.set_title(wrap(label, 70), fontsize=9)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def sample_browser(df, columns: Sequence[str] | None = None, title: str = "samples",
                   text_fields: Sequence[str] = ("question", "gold", "completion")):
    """An ipywidgets slider over rows of a per-sample DataFrame: its `text_fields` as text blocks, then
    the values of `columns` (rewards, scores).

    Falls back to printing the first row when ipywidgets is unavailable (plain terminals). Returns None.
    """
    columns = list(columns or [c for c in df.columns if c not in text_fields])

    def render(i: int) -> str:
        row = df.iloc[int(i)]
        blocks = "\n".join(f"{f.upper().replace('_', ' ')}:\n{row.get(f, '')}" for f in text_fields)
        scores = "\n".join(f"  {c}: {row[c]}" for c in columns if c in row)
        return f"[{title} {int(i) + 1}/{len(df)}]\n{blocks}\n{scores}"

    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        print(render(0))
        return None
    out = widgets.Output()
    slider = widgets.IntSlider(min=0, max=max(0, len(df) - 1), value=0, description="sample")

    def show(change=None):
        out.clear_output()
        with out:
            print(render(slider.value))

    slider.observe(show, names="value")
    show()
    display(widgets.VBox([slider, out]))  # displayed here, not returned: a returned widget would show twice


def trace_probe(curves: dict[str, Sequence[tuple[int, float]]], label: str, save_to: Sequence[str | Path] = ()):
    """log P(gold | prompt, first k reasoning lines) against k, one line per trace."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, (name, pts) in enumerate(curves.items()):
        ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name, color=_FALLBACK[i])
    ax.set_xlabel("reasoning lines given (k)")
    ax.set_ylabel("log P(gold answer | prompt, k lines)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(wrap(label, 70), fontsize=9)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


PROBE_PANELS = {"format_rate": "strict format rate (greedy)", "strict_accuracy": "strict accuracy (greedy)",
                "gold_answer_logprob": "log P(gold answer | own reasoning)"}


def probe_curves(histories: dict[str, object], label: str, save_to: Sequence[str | Path] = (),
                 changes: dict[str, object] | None = None, panels: dict[str, str] = PROBE_PANELS):
    """The held-out probe against GRPO step (step 0 = after the cold start), one panel per metric, runs overlaid.
    `histories` maps a run name to Experiment.probe_history(); `changes` (optional) maps it to probe_changes(),
    whose after-minus-start difference and 95 % interval are written into each panel's legend. `panels`: metric ->
    panel title (the writing task passes writing.PROBE_PANELS)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.2), squeeze=False)
    for ax, (metric, title) in zip(axes.flat, panels.items()):
        for name, hist in histories.items():
            if metric not in hist:
                continue
            legend = name
            color = color_for(name, list(histories).index(name))
            ax.plot(hist["step"], hist[metric], marker="o", ms=4, label=legend, color=color)
            if changes and name in changes and metric in set(changes[name]["metric"]):
                # the paired interval of (after GRPO - after cold start), drawn around the end point
                row = changes[name].set_index("metric").loc[metric]
                start, end = float(hist[metric].iloc[0]), float(hist["step"].iloc[-1])
                ax.errorbar([end], [start + row["delta"]], yerr=[[row["delta"] - row["ci95_lo"]],
                            [row["ci95_hi"] - row["delta"]]], fmt="none", ecolor=color, capsize=4, lw=1.2)
                ax.axhline(start, color=color, lw=0.6, ls=":")
        if metric.endswith(("accuracy", "rate")):
            ax.set_ylim(0, 1)  # shares on their whole range: a within-noise change does not look like a climb
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step (0 = after cold start)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(wrap(label + " · held-out probe; bar at the end: paired 95 % interval of the change, dotted: the "
                      "start", 45 * len(panels)), fontsize=9)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def change_intervals(table, label: str, *, row_label: str = "group", title: str = "after GRPO minus after cold start",
                     save_to: Sequence[str | Path] = ()):
    """Each row of a changes table (probe.changes / probe.group_changes / Experiment.transfer_changes) as its delta
    with the paired 95 % interval, a line at 0: an interval that crosses it is within noise. `row_label` names the
    column (or columns, joined) that labels the rows."""
    plt = pyplot()
    cols = [row_label] if isinstance(row_label, str) else list(row_label)
    names = [" · ".join(str(r[c]) for c in cols) + (f" (n={int(r['n'])})" if "n" in r else "") for _, r in table.iterrows()]
    title_lines = wrap(label, 75).count("\n") + 1
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.42 * max(len(table), 1) + 0.18 * title_lines))
    if len(table):
        ys = list(range(len(table)))[::-1]
        deltas = table["delta"].to_numpy(float)
        err = [deltas - table["ci95_lo"].to_numpy(float), table["ci95_hi"].to_numpy(float) - deltas]
        colors = [UP if lo > 0 else DOWN if hi < 0 else NOISE for lo, hi in zip(table["ci95_lo"], table["ci95_hi"])]
        for y, d, lo_err, hi_err, c in zip(ys, deltas, err[0], err[1], colors):
            ax.errorbar(d, y, xerr=[[lo_err], [hi_err]], fmt="o", color=c, capsize=3)
            ax.text(d, y + 0.18, f"{d:+.3f}", ha="center", fontsize=7)
        ax.set_yticks(ys, names, fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing measured (off in this preset)", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(title + " (95 % paired interval; green up, red down, grey within noise)", fontsize=8)
    ax.set_title(wrap(label, 75), fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def writing_bars(table, label: str, save_to: Sequence[str | Path] = ()):
    """Notebook 04's evaluation: the reference's perplexity given no plan / the model's own plan / the
    author's plan (lower = the plan helps more), then plan length and the stories' distinct-2, per model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    groups = [c for c in ("ppl_no_plan", "ppl_own_plan", "ppl_author_plan") if c in table
              and table[c].notna().any()]
    _grouped_bars(axes[0], table, groups, "{:.2f}", names=[g.replace("ppl_", "").replace("_", " ") for g in groups])
    axes[0].set_ylabel(f"median perplexity of the reference\n({int(table['n'].iloc[0])} held-out stories)")
    axes[0].legend(fontsize=8)
    for ax, col, name in ((axes[1], "plan_tokens", "plan length (tokens)"),
                          (axes[2], "distinct_2", "distinct-2 of the stories")):
        vals = list(table[col])
        bars = ax.bar(range(len(table)), vals, color=[color_for(m, i) for i, m in enumerate(table["model"])])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center",
                    va="bottom", fontsize=8)
        ax.set_xticks(range(len(table)), [str(m) for m in table["model"]], fontsize=8)
        ax.set_title(name, fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


GRPO_STEPS = (
    ("1 generate", "G completions per prompt\n(temperature T, current policy)"),
    ("2 reward", "each reward function scores\neach completion; weighted sum r_i"),
    ("3 advantage", "A_i = (r_i - mean(r)) / (std(r) + 1e-4)\nwithin the group of G"),
    ("4 loss + KL", "-A_i · ratio_t + β·KL_t per token\n(k3 estimator vs the reference)"),
)


def grpo_steps_figure(save_to: Sequence[str | Path] = ()):
    """The four steps of one GRPO update (TRL 0.18.2), as boxes and arrows; the update loops back to step 1."""
    plt = pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 2.6))
    ax.set_xlim(0, 4)
    ax.set_ylim(-0.35, 1)
    ax.axis("off")
    colors = ("#dbe9f6", "#fde9d0", "#e2f0d9", "#f4dcdc")
    for i, ((title, body), color) in enumerate(zip(GRPO_STEPS, colors)):
        ax.add_patch(FancyBboxPatch((i + 0.06, 0.08), 0.82, 0.84, boxstyle="round,pad=0.02", fc=color, ec="#555"))
        ax.text(i + 0.47, 0.74, title, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(i + 0.47, 0.38, body, ha="center", va="center", fontsize=8.5)
        if i < len(GRPO_STEPS) - 1:
            ax.add_patch(FancyArrowPatch((i + 0.9, 0.5), (i + 1.04, 0.5), arrowstyle="-|>", mutation_scale=14))
    ax.add_patch(FancyArrowPatch((3.47, 0.05), (0.47, 0.05), connectionstyle="arc3,rad=-0.08", arrowstyle="-|>",
                                 mutation_scale=14, color="#777"))
    ax.text(2.0, -0.3, "optimizer step on the LoRA weights, then the next batch of prompts", ha="center",
            fontsize=8.5, color="#555")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig
