"""The ablation grid's schema: variants (named RunConfig overrides + logprob options), the grids per preset,
their validation, and what each variant really trains with on a backend (variants that coincide there)."""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from typing import Sequence

from .. import config as config_mod
from .. import runtime
from ..config import RULE_REWARDS, ConfigError, RunConfig
from ..logprob import TRANSFORMS, floor_for

# Options a variant may set besides RunConfig fields, with their defaults (notebook 02's setup).
LOGPROB_OPTIONS: dict[str, object] = {
    "transform": "mean",      # a key of logprob.TRANSFORMS
    "scorer": "policy",       # "policy" (adapter on) or "reference" (adapter off: the starting policy)
    "format_rewards": True,   # False: the rule format rewards get weight 0 (still logged)
    "logprob_weight": 1.0,    # weight of the logprob reward in TRL's weighted sum
    "floor": None,   # lower bound of "clip" and reward of unscorable completions; None: the transform's own
    # (-20 for log-space transforms, 0 for the probability transforms prob / gmean_prob / token_prob_mean)
    "sft_weight": 0.0,        # λ of the SFT term λ·NLL(gold | prompt, own reasoning); 0 = off
}
# Fields every variant of a grid shares, because all variants start from one shared cold start and one
# shared "start" evaluation (and the SFT adapter must fit each variant's LoRA). Change them in the base config.
SHARED_FIELDS = frozenset({
    "preset", "run_name", "project", "model_name", "precision", "load_in_4bit", "backend", "lora_r", "lora_alpha",
    "lora_targets", "dataset_source", "train_size", "eval_size", "eval_max_new_tokens", "sft_steps", "sft_batch",
    "sft_learning_rate", "tag_style",
})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_FORMAT_REWARDS = tuple(r for r in RULE_REWARDS if r != "correctness_reward")
GRID_RUN_NAME = "03_ablations"

# ---------------------------------------------------------------------------------------
# The grids. "_only" = the logprob reward alone (format rewards weight 0); the others add it to the
# format rewards as notebook 02 does. The facts each pair shows are checked in tests/test_cancellation.py
# and taught in notebook 03.
_A100 = [
    # What cancels: alone, sum and mean differ by the per-group constant n (gold answer tokens), which the
    # std scaling divides out (equal up to TRL's 1e-4); without the scaling, mean's advantages are n× smaller.
    {"name": "sum_only", "transform": "sum", "format_rewards": False},
    {"name": "mean_only", "transform": "mean", "format_rewards": False},
    {"name": "sum_only_noscale", "transform": "sum", "format_rewards": False, "scale_rewards": False},
    {"name": "mean_only_noscale", "transform": "mean", "format_rewards": False, "scale_rewards": False},
    # The loss's normalization alone (Dr. GRPO's length fix, arXiv 2503.20783, without its std change): every token
    # weighs 1/(B·max_completion_length) instead of 1/(B·|o_i|), so short completions lose their larger per-token push.
    {"name": "mean_only_drloss", "transform": "mean", "format_rewards": False, "loss_type": "dr_grpo"},
    # A non-linear transform alone: RLPR's mean token probability (arXiv 2506.18254). Scaling cannot cancel a change
    # of shape: the spacing between a group's rewards, hence its advantages, differs from the log-prob's.
    {"name": "token_prob_only", "transform": "token_prob_mean", "format_rewards": False},
    # The control (notebook 02) and one change at a time.
    {"name": "mean"},
    {"name": "sum", "transform": "sum"},  # mixed with format rewards the factor n no longer cancels
    {"name": "prob_x3", "transform": "prob", "logprob_weight": 3.0},
    {"name": "gmean_prob_x3", "transform": "gmean_prob", "logprob_weight": 3.0},  # the course project's reward
    {"name": "debiased", "transform": "debiased"},  # sum minus a per-prompt constant: same advantages as "sum"
    {"name": "clip", "transform": "clip", "floor": -10.0},  # every trace with P(gold) < e^-10 ties
    {"name": "reference", "scorer": "reference"},
    {"name": "bnpo", "loss_type": "bnpo"},
    {"name": "dr_grpo", "loss_type": "dr_grpo"},
    {"name": "sft_term", "sft_weight": 0.1},
]
_BY_NAME = {v["name"]: v for v in _A100}

GRIDS: dict[str, list[dict]] = {
    # CI: two variants that between them run every code path (sum and mean transforms, format rewards on
    # and off, scale_rewards off, the SFT-term trainer).
    "smoke": [_BY_NAME["mean"], {"name": "sum_only_noscale_sft", "transform": "sum", "format_rewards": False,
                                 "scale_rewards": False, "sft_weight": 0.1}],
    # A 2-core laptop, SmolLM2-135M, the arith task, 18 steps each (GRID_OVERRIDES), the logprob reward scoring the
    # answer span. Each variant changes one thing that std scaling does NOT cancel, against the control mean_only:
    # the scaling itself (noscale), the loss's length normalization (drloss), the transform's shape (token_prob) and
    # the mix with format rewards (mean, notebook 02's setup). sum_only gets the same advantages as mean_only (the
    # notebook shows why in milliseconds), so the two differ only by sampling after the first steps: their gap is the
    # grid's noise floor, what a change of seed alone does. The 2026-12-05 sum_only / mean_only / mean_only_noscale
    # runs took 260-344 s of GRPO each on a 2-core Xeon with AMX (bf16).
    "cpu": [_BY_NAME[n] for n in ("mean_only", "sum_only", "mean_only_noscale", "mean_only_drloss", "token_prob_only",
                                  "mean")],

    # One free Colab T4 session (Qwen2.5-1.5B 4-bit, 150 steps each, GRID_OVERRIDES). Estimate: the course
    # project this curriculum follows (README, "What good looks like") ran ~12 s/step for Qwen2.5-3B on a T4; our 1.5B model has half the parameters but up to 512-token
    # completions (generation dominates and grows with length), so we keep 12 s/step rather than halve it:
    # 12 s × 150 steps × 4 variants = 7,200 s = 2.0 h, + ~3 min per evaluation of 100 questions (5 evals)
    # + ~3 min model load ≈ 2.3 h, inside the ~3-4 h of GPU a free session usually gets. A disconnect
    # costs at most save_steps=25 steps: run the notebook again and finished variants are skipped.
    # The four choices that change training most on a real model: control, mixed sum, the course
    # project's exp-transform ×3, and the SFT term.
    "t4": [_BY_NAME[n] for n in ("mean", "sum", "gmean_prob_x3", "sft_term")],
    # The full grid (16 variants × 300 steps). At an assumed ~6 s/step for Qwen2.5-3B on an A100 (not
    # measured) that is ~8 h: several sessions, each resuming where the last stopped.
    "a100": _A100,
    # gpu-hf (a GPU without Unsloth, e.g. Colab's default runtime: generation through transformers): the cpu grid's
    # control and its two normalization variants, 40 steps each (GRID_OVERRIDES). Estimate, not measured: ~13 s/step on a
    # T4 (config.py's gpu-hf comment) x 40 x 3 = 26 min, + the cold start and 4 evaluations of 50 questions ≈ 35 min.
    "gpu-hf": [_BY_NAME[n] for n in ("mean_only", "mean_only_noscale", "mean_only_drloss")],
}
# Base-config overrides for the grid runs on top of the preset of the same name (shorter than a full run).
GRID_OVERRIDES: dict[str, dict] = {
    "smoke": {},
    # cpu: the cpu preset as notebooks 01/02 train it (the arith task, lr 2e-4, beta 0, 96-token completions), 18 steps
    # per variant, a 100-problem evaluation.
    "cpu": {"max_steps": 18, "save_steps": 6, "eval_size": 100},
    "t4": {"max_steps": 150, "save_steps": 25, "eval_size": 100},
    "a100": {"max_steps": 300, "save_steps": 50},
    "gpu-hf": {"max_steps": 40, "save_steps": 20, "eval_size": 50},
}


def base_config(grid: str, **overrides) -> RunConfig:
    """The base RunConfig of grid `grid` (preset of the same name + GRID_OVERRIDES + `overrides`)."""
    if grid not in GRIDS:
        raise ConfigError(f"Unknown grid {grid!r}. Choose one of {list(GRIDS)}.")
    return config_mod.preset(grid, **{"run_name": GRID_RUN_NAME, **GRID_OVERRIDES[grid], **overrides})


# ---------------------------------------------------------------------------------------
# Validation and per-variant configuration
def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def normalized_variant(variant: dict) -> dict:
    """`variant` with every logprob option filled in; ConfigError when a key or value is invalid."""
    if not isinstance(variant, dict):
        raise ConfigError(f"A variant must be a dict with a 'name', got {type(variant).__name__}: {variant!r}.")
    name = variant.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"Variant name {name!r} is missing or invalid. Give each variant a 'name' of letters, digits, "
            "'_', '-', '.' or '+' (it becomes a folder name), e.g. {'name': 'mean_noscale', ...}.")
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    valid = fields + list(LOGPROB_OPTIONS)
    unknown = [k for k in variant if k != "name" and k not in valid]
    if unknown:
        hints = "".join(_suggest(k, valid) for k in unknown)
        raise ConfigError(
            f"Variant {name!r}: unknown key(s) {unknown}{hints}. A variant may set RunConfig fields or the "
            f"logprob options {list(LOGPROB_OPTIONS)}.")
    shared = sorted(SHARED_FIELDS & set(variant))
    if shared:
        raise ConfigError(
            f"Variant {name!r} sets {shared}, which all variants of a grid share (one cold start, one start "
            "evaluation). Set them in the base config instead, or run a second grid.")
    if "reward_weights" in variant:
        raise ConfigError(
            f"Variant {name!r} sets reward_weights directly. Use 'transform', 'logprob_weight' and "
            "'format_rewards' instead: the weights are derived from them.")
    v = {"name": name, **LOGPROB_OPTIONS, **{k: val for k, val in variant.items() if k != "name"}}
    if v["transform"] not in TRANSFORMS:
        raise ConfigError(
            f"Variant {name!r}: unknown transform {v['transform']!r}{_suggest(str(v['transform']), list(TRANSFORMS))}. "
            f"Choose one of {list(TRANSFORMS)}.")
    if v["scorer"] not in ("policy", "reference"):
        raise ConfigError(f"Variant {name!r}: unknown scorer {v['scorer']!r}. Choose 'policy' or 'reference'.")
    if not isinstance(v["format_rewards"], bool):
        raise ConfigError(f"Variant {name!r}: format_rewards={v['format_rewards']!r} must be True or False.")
    for key in ("logprob_weight", "floor", "sft_weight"):
        if key == "floor" and v[key] is None:
            continue
        if not isinstance(v[key], (int, float)) or isinstance(v[key], bool) or not math.isfinite(v[key]):
            raise ConfigError(f"Variant {name!r}: {key}={v[key]!r} must be a finite number.")
    try:
        floor_for(v["transform"], v["floor"])
    except ConfigError as exc:
        raise ConfigError(f"Variant {name!r}: {exc}") from exc
    if v["sft_weight"] < 0:
        raise ConfigError(f"Variant {name!r}: sft_weight={v['sft_weight']} must be 0 (off) or positive.")
    return v


def variant_reward_weights(variant: dict) -> dict[str, float]:
    """TRL reward weights of a (normalized) variant: format rewards 1 or 0, correctness 0 (logged), logprob w."""
    weights = {**dict.fromkeys(RULE_REWARDS, 1.0), "correctness_reward": 0.0,
               f"logprob_{variant['transform']}_reward": float(variant["logprob_weight"])}
    if not variant["format_rewards"]:
        weights.update(dict.fromkeys(_FORMAT_REWARDS, 0.0))
    return weights


def variant_config(base_cfg: RunConfig, variant: dict) -> RunConfig:
    """The RunConfig of one variant: the base, its field overrides, its reward weights, run_name base/name."""
    v = normalized_variant(variant)
    fields = {k: val for k, val in v.items() if k not in LOGPROB_OPTIONS and k != "name"}
    return base_cfg.override(**fields, reward_weights=variant_reward_weights(v),
                             run_name=f"{base_cfg.run_name}/{v['name']}")


def validate_variants(variants: Sequence[dict], base_cfg: RunConfig, *, gpu_available: bool | None = None
                      ) -> list[dict]:
    """The normalized variants; ConfigError naming the variant and the fix if any cannot run. Loads nothing."""
    if not variants:
        raise ConfigError("No variants given. Pass a list such as ablations.GRIDS['cpu'].")
    out, seen = [], {}
    for i, variant in enumerate(variants):
        v = normalized_variant(variant)
        if v["name"] in seen:
            raise ConfigError(
                f"Variant name {v['name']!r} appears twice (variants #{seen[v['name']]} and #{i}). Each variant "
                "writes to its own folder <run>/<name>: rename one of them.")
        seen[v["name"]] = i
        try:
            config_mod.validate(variant_config(base_cfg, v), num_processes=runtime.num_processes(),
                                gpu_available=gpu_available)
        except ConfigError as exc:
            raise ConfigError(f"Variant {v['name']!r}: {exc}") from exc
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------
# What a variant really trains with on a backend
EFFECTIVE_NOTES = {
    "unsloth": "unsloth 2025.6.12 computes loss_type 'bnpo' per sequence, as 'grpo', and its GRPOConfig turns "
               "scale_rewards off for 'dr_grpo' (unsloth/models/rl.py)",
    "hf": "TRL 0.18.2 uses the arguments as given",
}


def effective_variant(variant: dict, base_cfg: RunConfig, backend: str) -> dict:
    """The variant's training-relevant settings as the trainer will use them on `backend` (name left out)."""
    v = normalized_variant(variant)
    cfg = variant_config(base_cfg, v)
    loss, scale = cfg.loss_type, cfg.scale_rewards
    if backend == "unsloth":
        if loss == "dr_grpo":
            scale = False
        if loss == "bnpo":
            loss = "grpo"
    fields = {k: val for k, val in v.items() if k != "name"}
    return {**fields, "loss_type": loss, "scale_rewards": scale}


def coinciding_variants(variants: Sequence[dict], base_cfg: RunConfig, backend: str) -> dict[str, str]:
    """{variant name: the earlier variant it becomes identical to on this backend, though written differently}:
    GPU hours not to spend twice. Variants written identically (e.g. to repeat a run) are left alone."""
    def key(d: dict) -> str:
        return json.dumps({k: val for k, val in d.items() if k != "name"}, sort_keys=True, default=str)

    seen: dict[str, tuple[str, str]] = {}  # effective key -> (name, written key)
    out: dict[str, str] = {}
    for v in variants:
        v = normalized_variant(v)
        eff, written = key(effective_variant(v, base_cfg, backend)), key(v)
        if eff in seen and seen[eff][1] != written:
            out[v["name"]] = seen[eff][0]
        else:
            seen.setdefault(eff, (v["name"], written))
    return out
