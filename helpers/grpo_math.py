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


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


def trl_loss(per_token_loss, completion_mask, loss_type: str, max_completion_length: int):
    """trl 0.18.2 grpo_trainer.py L1379-1386 (`_compute_loss`): the per-token losses reduced to one loss, per
    loss_type (self.max_completion_length turned into an argument); tests/test_cancellation.py pins the lines."""
    if loss_type == "grpo":
        loss = ((per_token_loss * completion_mask).sum(-1) / completion_mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * completion_mask).sum() / (per_token_loss.size(0) * max_completion_length)
    else:
        raise ValueError(f"Unknown loss_type {loss_type!r}. Choose one of {list(LOSS_TYPES)}.")
    return loss


def token_weights(lengths: Sequence[int], loss_type: str, max_completion_length: int):
    """The weight `trl_loss` gives each token of completions of the given lengths (d loss / d per-token loss, read
    back by autograd): a [batch, max_completion_length] tensor, 0 on padding."""
    import torch

    lengths = torch.as_tensor(lengths)
    mask = (torch.arange(max_completion_length) < lengths[:, None]).float()
    x = torch.zeros(len(lengths), max_completion_length, requires_grad=True)
    trl_loss(x, mask, loss_type, max_completion_length).backward()
    return x.grad


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


# One line per GRPOConfig argument helpers.training.grpo_args sets (the RunConfig field it comes from, if any).
GRPO_ARG_COMMENTS = {
    "learning_rate": "AdamW step size for the LoRA weights (RunConfig.learning_rate)",
    "max_steps": "optimizer updates; each one generates a fresh batch of completions (max_steps)",
    "lr_scheduler_type": "learning-rate shape over max_steps (lr_scheduler_type)",
    "warmup_ratio": "share of the steps spent ramping the learning rate up from 0 (warmup_ratio)",
    "weight_decay": "AdamW decoupled weight decay (weight_decay)",
    "max_grad_norm": "clip the gradient's global L2 norm to this (max_grad_norm)",
    "adam_beta1": "AdamW first-moment decay (adam_beta1)",
    "adam_beta2": "AdamW second-moment decay (adam_beta2)",
    "per_device_train_batch_size": "completions per device per micro-step (per_device_batch)",
    "gradient_accumulation_steps": "micro-steps per optimizer update (grad_accum)",
    "num_generations": "G, the group size: completions per prompt compared with each other (num_generations)",
    "max_prompt_length": "prompt tokens kept (left-truncated) (max_prompt_length)",
    "max_completion_length": "generation stops here; dr_grpo divides by it (max_completion_length)",
    "temperature": "sampling temperature for the G completions: diversity inside a group (temperature)",
    "beta": "β, weight of the KL penalty to the reference model; 0 skips the reference pass (beta)",
    "loss_type": "how per-token losses are averaged: grpo | bnpo | dr_grpo (loss_type)",
    "scale_rewards": "divide advantages by the group's reward std (scale_rewards)",
    "reward_weights": "weight of each reward function in the sum r_i (reward_weights, set by train_grpo)",
    "num_iterations": "updates per generated batch (TRL default 1: the ratio is exactly 1, clipping is inactive)",
    "epsilon": "PPO clip range ±ε on the ratio (TRL default; inactive when num_iterations=1)",
    "logging_steps": "write metrics every N steps (logging_steps)",
    "save_steps": "checkpoint every N steps, for resume (save_steps)",
    "save_total_limit": "checkpoints kept on disk (save_total_limit)",
    "seed": "random seed (seed)",
    "report_to": "extra loggers: none | tensorboard | wandb (report_to); metrics.csv is always written",
    "bf16": "bf16 autocast (from precision; off on CPU, where the base weights themselves are bf16)",
    "fp16": "fp16 autocast with loss scaling (from precision)",
    "use_vllm": "generate with vLLM (Unsloth backend, or vllm_mode server/colocate) instead of HF generate",
    "optim": "optimizer: adamw_torch (hf) or adamw_8bit (Unsloth)",
}


def describe_grpo_config(args) -> str:
    """Each GRPOConfig argument the course sets (or relies on), its value and what it does, one per line."""
    width = max(map(len, GRPO_ARG_COMMENTS))
    lines = []
    for name, comment in GRPO_ARG_COMMENTS.items():
        value = getattr(args, name, None)
        if hasattr(value, "value"):  # enums such as SchedulerType
            value = value.value
        lines.append(f"{name:<{width}} = {value!s:<10} # {comment}")
    return "\n".join(lines)
