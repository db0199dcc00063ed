"""The writing task's settings: system prompt, VR-CLI levels, per-preset overrides, reward weights, run config."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, RunConfig

BUNDLED_STORIES = Path(__file__).resolve().parent.parent / "data_files" / "stories" / "stories.jsonl"
HUB_DATASET = "roneneldan/TinyStories"  # license: CDLA-Sharing-1.0 (dataset card); synthetic stories by GPT-3.5/4
HUB_LICENSE = "CDLA-Sharing-1.0"

WRITING_SYSTEM_PROMPT = (
    "You continue stories. First plan the rest of the story in a few short notes, then write it.\n"
    "Respond in the following format:\n"
    "<reasoning>\n...\n</reasoning>\n"
    "<answer>\n...\n</answer>"
)
USER_TEMPLATE = "Continue this story.\n\n{opening}"

# VR-CLI reward levels: improvement (percent) below 0.05 -> 0, [0.05, 1) -> 0.5, [1, 2) -> 0.9, >= 2 -> 1.0.
VRCLI_THRESHOLDS = (0.05, 1.0, 2.0)
VRCLI_LEVELS = (0.0, 0.5, 0.9, 1.0)
KINDS = ("mean", "vrcli")

# Per preset: what the writing task changes on top of config.preset() (longer prompts and completions).
WRITING_OVERRIDES = {
    "smoke": dict(max_prompt_length=256, max_completion_length=32, eval_max_new_tokens=32, max_plan_tokens=16,
                  max_target_tokens=48, train_size=8, eval_size=3, sft_steps=2),
    # cpu: the cpu preset's learning budget (lr 2e-4, beta 0, 25 steps, a checkpoint every 10, where the held-out
    # stories are probed) with the writing lengths. Before, at lr 5e-5 and beta 0.04, GRPO moved nothing measurable.
    # Generation shape and precision as measured (G=4, one story a step, fp32): config.CPU_GSM8K_BUDGET's.
    "cpu": dict(num_generations=4, per_device_batch=4, precision="fp32", max_prompt_length=256, max_completion_length=160, eval_max_new_tokens=200, max_plan_tokens=64,
                max_target_tokens=160, train_size=None, eval_size=30, eval_batch_size=8, sft_steps=30),
    "t4": dict(max_prompt_length=512, max_completion_length=512, eval_max_new_tokens=512, max_plan_tokens=192,
               max_target_tokens=384, train_size=5000, eval_size=100, max_steps=300, sft_steps=0),
    "a100": dict(max_prompt_length=512, max_completion_length=768, eval_max_new_tokens=768, max_plan_tokens=256,
                 max_target_tokens=512, train_size=20000, eval_size=200, max_steps=500, sft_steps=0),
    # gpu-hf (generation through transformers): 100 steps of 8 plans + stories <= 256 tokens, ~13 s a step on a T4
    # (an estimate, config.py's gpu-hf comment) ≈ 22 min + the cold start and two evaluations of 50 stories.
    "gpu-hf": dict(max_prompt_length=512, max_completion_length=256, eval_max_new_tokens=256, max_plan_tokens=96,
                   max_target_tokens=192, train_size=2000, eval_size=50, max_steps=100),
}


def writing_weights(kind: str = "mean", weight: float = 1.0, format_weight: float = 0.05) -> dict[str, float]:
    """Reward weights: the writing reward, plus the two format rewards as a small nudge.

    The mean token log-prob of the reference differs by a few hundredths of a nat between the plans of
    one group (within-group std ~0.03 on the cpu preset, measured); format rewards of 0.5 at weight 1 would
    swamp it under std-scaled advantages (notebook 03). At 0.05 a format difference (0.025) is about
    one standard deviation of the writing reward.
    """
    if kind not in KINDS:
        raise ConfigError(f"Unknown writing reward {kind!r}. Choose one of {list(KINDS)}.")
    return {"strict_format_reward": format_weight, "soft_format_reward": format_weight, f"writing_{kind}_reward": weight}


def writing_config(preset_name: str, kind: str = "mean", **overrides) -> RunConfig:
    """The named preset with the writing task's lengths and weights (run directory 04_writing_<kind>)."""
    from .. import config

    base = dict(WRITING_OVERRIDES.get(preset_name, {}), run_name=f"04_writing_{kind}",
                reward_weights=writing_weights(kind))
    cfg = config.preset(preset_name, **{**base, **overrides})
    if cfg.max_plan_tokens >= cfg.max_completion_length:
        raise ConfigError(f"max_plan_tokens={cfg.max_plan_tokens} leaves no room for the story in "
                          f"max_completion_length={cfg.max_completion_length}. Lower max_plan_tokens.")
    return cfg
