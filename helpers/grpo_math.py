"""GRPO's advantage computation, as TRL 0.18.2 runs it, callable without a model (notebook 01, tests).

TRL computes advantages inside `GRPOTrainer._generate_and_score_completions`, which also generates and
scores completions, so it cannot run on hand-made rewards. `trl_advantages` is a line-for-line copy of
trl 0.18.2, trl/trainer/grpo_trainer.py lines 1204-1216 (self.* made arguments, logging-only lines dropped);
tests/test_cancellation.py reads the installed TRL source and fails if those lines change.
"""
from __future__ import annotations

from typing import Sequence


def trl_advantages(rewards_per_func, reward_weights, num_generations: int, scale_rewards: bool):
    """trl 0.18.2 grpo_trainer.py L1204-1216 (self.* turned into arguments, logging-only lines dropped)."""
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    std_grouped_rewards = rewards.view(-1, num_generations).std(dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_grouped_rewards = std_grouped_rewards.repeat_interleave(num_generations, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards:
        advantages = advantages / (std_grouped_rewards + 1e-4)
    return advantages


def advantage_table(rewards_per_func: Sequence[Sequence[float]], names: Sequence[str],
                    weights: Sequence[float] | None = None, num_generations: int | None = None,
                    scale_rewards: bool = True):
    """A DataFrame: one row per completion with each reward component, the weighted sum, the group's mean and
    std, and the advantage from `trl_advantages`. Also returns frac_reward_zero_std as TRL logs it (the share
    of groups whose rewards are all equal, so every advantage in them is 0)."""
    import pandas as pd
    import torch

    r = torch.tensor(rewards_per_func, dtype=torch.float32)
    w = torch.tensor(weights if weights is not None else [1.0] * r.shape[1], dtype=torch.float32)
    g = num_generations or r.shape[0]
    adv = trl_advantages(r, w, g, scale_rewards)
    total = (r * w.unsqueeze(0)).nansum(dim=1)
    std = total.view(-1, g).std(dim=1)
    table = pd.DataFrame({name: r[:, i].tolist() for i, name in enumerate(names)})
    if r.shape[1] > 1:
        table["weighted sum"] = total.tolist()
    table.insert(0, "group", [i // g for i in range(r.shape[0])])
    table["group mean"] = total.view(-1, g).mean(dim=1).repeat_interleave(g).tolist()
    table["group std"] = std.repeat_interleave(g).tolist()
    table["advantage"] = adv.tolist()
    frac_zero_std = float(torch.isclose(std, torch.zeros_like(std)).float().mean())  # TRL's own test
    return table.round(3), frac_zero_std
