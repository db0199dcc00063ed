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

    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def run_label(model: str, steps: int | str, hardware: str | None = None) -> str:
    return f"{model.split('/')[-1].replace('embedded:', '')} · {steps} steps · {hardware or hardware_label()}"


def _plt():
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


def _save(fig, paths: Sequence[str | Path]) -> list[Path]:
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
    plt = _plt()
    frames = {name: load_metrics(p) for name, p in runs.items()}
    if columns is None:
        cols: list[str] = []
        for df in frames.values():
            cols += [c for c in df.columns if c.startswith("rewards/") and c.endswith("/mean") and c not in cols]
        cols += [c for c in ("reward", "completions/mean_length", "kl") if any(c in df for df in frames.values())]
    else:
        cols = list(columns)
    ncol = 3
    nrow = max(1, -(-len(cols) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        for name, df in frames.items():
            if col in df:
                ax.plot(df["step"], _smooth(df[col], smooth), label=name, lw=1.5)
        ax.set_title(col.replace("rewards/", "").replace("/mean", ""), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    if len(frames) > 1:
        axes.flat[0].legend(fontsize=8)
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    _save(fig, save_to)
    return fig


def accuracy_bars(table, label: str, save_to: Sequence[str | Path] = (),
                  metrics: Sequence[str] = ("strict_accuracy", "lenient_accuracy", "format_rate")):
    """Grouped bars: one group per metric, one bar per evaluated model (e.g. before / after)."""
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(metrics), 3.4))
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(table))
    for i, (_, row) in enumerate(table.iterrows()):
        vals = [row[m] for m in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=str(row["model"]))
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.0%}", ha="center", fontsize=8)
    ax.set_xticks(x, [m.replace("_", " ") for m in metrics])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"share of {int(table['n'].iloc[0])} questions")
    ax.legend(fontsize=8)
    ax.set_title(label, fontsize=10)
    fig.tight_layout()
    _save(fig, save_to)
    return fig


def sample_browser(df, columns: Sequence[str] | None = None, title: str = "samples"):
    """An ipywidgets slider over rows of a per-sample DataFrame (question, completion, each reward).

    Falls back to printing the first row when ipywidgets is unavailable (plain terminals).
    """
    columns = list(columns or [c for c in df.columns if c not in ("question", "completion", "gold")])

    def render(i: int) -> str:
        row = df.iloc[int(i)]
        scores = "\n".join(f"  {c}: {row[c]}" for c in columns if c in row)
        return (f"[{title} {int(i) + 1}/{len(df)}]\nQUESTION: {row.get('question', '')}\nGOLD: {row.get('gold', '')}\n"
                f"COMPLETION:\n{row.get('completion', '')}\n{scores}")

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
    box = widgets.VBox([slider, out])
    display(box)
    return box


def trace_probe(curves: dict[str, Sequence[tuple[int, float]]], label: str, save_to: Sequence[str | Path] = ()):
    """log P(gold | prompt, first k reasoning lines) against k, one line per trace."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, pts in curves.items():
        ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("reasoning lines given (k)")
    ax.set_ylabel("log P(gold answer | prompt, k lines)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(label, fontsize=10)
    fig.tight_layout()
    _save(fig, save_to)
    return fig
