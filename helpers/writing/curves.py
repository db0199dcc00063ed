"""Training curves of a writing run."""
from __future__ import annotations

from .. import plots

def writing_curves(metrics_csv, kind: str, label: str, save_to=(), smooth: int = 3):
    """Training curves of a writing run: total reward, the reference's mean log-prob with the plan and
    with no plan (each step is a different story: that is most of the reward's movement), the
    improvement over no plan, plan length and missing plans (collapse), format, length, KL."""
    stat = f"writing_{kind}"
    return plots.training_curves({"GRPO": metrics_csv}, label, smooth=smooth, save_to=save_to, columns=[
        "reward", f"{stat}/mean_logprob", f"{stat}/noplan_logprob", f"{stat}/improvement_pct",
        f"{stat}/plan_tokens", f"{stat}/plan_missing_frac", "rewards/strict_format_reward/mean",
        "completions/mean_length", "kl"])
