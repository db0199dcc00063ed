"""Ablations of the logprob reward: variant definitions, the grid runner, aggregation, the SFT term
and the training-dynamics probe.

A *variant* is a named dict of RunConfig overrides plus logprob options (`LOGPROB_OPTIONS`):

    {"name": "gmean_prob_x3", "transform": "gmean_prob", "logprob_weight": 3.0}
    {"name": "mean_only_noscale", "format_rewards": False, "scale_rewards": False}

`run_grid(base_cfg, variants, backend=...)` trains each variant in its own run directory
`<runs>/<base run_name>/<variant name>/` with `pipeline.Experiment` + `training.train_grpo`, so a
re-run skips finished variants and resumes interrupted ones. All variants start from the same policy:
the optional cold-start SFT and the "start" evaluation are done once per grid, in the grid directory.
`aggregate(grid_dir)` builds one table (ablation_results.csv); `helpers.ablation_plots` draws it.

Replicates are variants that differ only in `seed` (e.g. "mean_s1", "mean_s2"): 30-step runs are noisy.

Grid directory layout:
    grid.json                 the variants, as run
    sft_lora/ ...             the shared cold start (when sft_steps > 0)
    eval_samples_start.csv    greedy answers of the shared starting policy (also the dynamics pool)
    <variant>/                a normal run directory + results.json and dynamics.csv
    ablation_results.csv      one row per variant
"""
from __future__ import annotations

import dataclasses
import difflib
import gc
import json
import math
import re
import time
from pathlib import Path
from typing import Callable, Sequence

from . import config as config_mod
from . import data, evaluation, pipeline, runtime, training
from .config import RULE_REWARDS, ConfigError, RunConfig
from .logprob import TRANSFORMS, floor_for, logprob_reward
from .rewards import RULE_REWARD_FUNCS

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
    "sft_learning_rate",
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
    # A 2-core laptop, SmolLM2-135M, 15 steps each (GRID_OVERRIDES). Measured on this project's 2-core
    # machine: ~21 s per GRPO step with rule rewards (notebook 01, cpu preset), ~25 s with the logprob reward
    # (notebook 02), ~3 min for the 40 SFT steps, ~1.5 min to evaluate 20 questions. Estimate:
    # 3 variants × (15 × 25 s + 1.5 min) + SFT 3 min + start eval 1.5 min ≈ 29 min, resumable at any point.
    # It shows the central fact: with the same seed, sum and mean (std-scaled) give the same advantages,
    # hence the same updates and (up to float rounding) the same run; without the scaling they do not.
    "cpu": [_BY_NAME[n] for n in ("sum_only", "mean_only", "mean_only_noscale")],
    # One free Colab T4 session (Qwen2.5-1.5B 4-bit, 150 steps each, GRID_OVERRIDES). Estimate: the course
    # project this curriculum follows (README, "What good looks like") ran ~12 s/step for Qwen2.5-3B on a T4; our 1.5B model has half the parameters but up to 512-token
    # completions (generation dominates and grows with length), so we keep 12 s/step rather than halve it:
    # 12 s × 150 steps × 4 variants = 7,200 s = 2.0 h, + ~3 min per evaluation of 100 questions (5 evals)
    # + ~3 min model load ≈ 2.3 h, inside the ~3-4 h of GPU a free session usually gets. A disconnect
    # costs at most save_steps=25 steps: run the notebook again and finished variants are skipped.
    # The four choices that change training most on a real model: control, mixed sum, the course
    # project's exp-transform ×3, and the SFT term.
    "t4": [_BY_NAME[n] for n in ("mean", "sum", "gmean_prob_x3", "sft_term")],
    # The full grid (14 variants × 300 steps). At an assumed ~6 s/step for Qwen2.5-3B on an A100 (not
    # measured) that is ~7 h: several sessions, each resuming where the last stopped.
    "a100": _A100,
}
# Base-config overrides for the grid runs on top of the preset of the same name (shorter than a full run).
GRID_OVERRIDES: dict[str, dict] = {
    "smoke": {},
    "cpu": {"max_steps": 15, "save_steps": 5, "eval_size": 20},
    "t4": {"max_steps": 150, "save_steps": 25, "eval_size": 100},
    "a100": {"max_steps": 300, "save_steps": 50},
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


# ---------------------------------------------------------------------------------------
# The runner
def fresh_model_loader(backend: str) -> Callable[[RunConfig], tuple]:
    """A function cfg -> (model with a fresh LoRA, tokenizer).

    hf: a new load per variant (the cold start merges SFT into the base weights, so reuse would leak).
    unsloth: one load per session (a second vLLM engine would not fit), the LoRA re-initialised per variant.
    """
    if backend != "unsloth":
        return lambda cfg: training.load_model(cfg, backend)
    loaded: dict = {}

    def load(cfg: RunConfig):
        if "pair" not in loaded:
            loaded["pair"] = training.load_model(cfg, backend)
        else:
            reset_lora(loaded["pair"][0], cfg.seed)
        return loaded["pair"]

    return load


def reset_lora(model, seed: int = 0) -> int:
    """Re-initialise every LoRA adapter in place (A random, B zero: the model equals its base again).

    Returns the number of LoRA layers reset."""
    import torch
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(seed)
    n = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)
            n += 1
    return n


def run_grid(base_cfg: RunConfig, variants: Sequence[dict], *, backend: str,
             load_model: Callable[[RunConfig], tuple] | None = None, dynamics_pool_size: int = 8,
             overwrite: bool = False):
    """Train and evaluate every variant (skipping finished ones), then return the aggregated DataFrame.

    Every variant is validated before anything loads. Per variant, `_run_variant` loads a fresh model
    with `load_model(cfg)` (default: `fresh_model_loader(backend)`), trains, evaluates and writes
    results.json. The table is saved as <grid>/ablation_results.csv.
    """
    variants = validate_variants(variants, base_cfg)
    grid_dir = runtime.run_dir(base_cfg.project, base_cfg.run_name)
    _check_grid_config(grid_dir, base_cfg, overwrite)  # the shared cold start and every variant's results
    same_as = coinciding_variants(variants, base_cfg, backend)
    for name, other in same_as.items():
        print(f"[ablations] {name}: on the {backend} backend it trains exactly like {other!r} "
              f"({EFFECTIVE_NOTES[backend]}): skipped, its row says so.")
    if runtime.is_main_process():
        runtime.atomic_write_json(grid_dir / "grid.json", {"base": base_cfg.to_dict(), "variants": variants,
                                                           "backend": backend, "same_as": same_as})
    load_model = load_model or fresh_model_loader(backend)
    disk = {"printed": False, "variants": len(variants) - len(same_as)}
    for v in variants:
        if v["name"] in same_as:
            continue
        rd = grid_dir / v["name"]
        if training.is_finished(rd) and (rd / "results.json").exists():
            training.check_run_config(rd, variant_config(base_cfg, v))  # reused only under the same config
            print(f"[ablations] {v['name']}: finished earlier, reading {rd / 'results.json'}")
            continue
        resuming = training.latest_checkpoint(rd / "checkpoints") is not None
        print(f"[ablations] {v['name']}: {'resuming' if resuming else 'training'}")
        _run_variant(variant_config(base_cfg, v), v, backend=backend, load_model=load_model, grid_dir=grid_dir,
                     dynamics_pool_size=dynamics_pool_size, disk=disk)
        gc.collect()  # the variant's model is unreferenced now: free it before loading the next one
    if not runtime.is_main_process():
        return None
    table = aggregate(grid_dir, [v["name"] for v in variants], same_as=same_as)
    runtime.atomic_write_csv(grid_dir / "ablation_results.csv", table)
    return table


def _check_grid_config(grid_dir: Path, base_cfg: RunConfig, overwrite: bool) -> None:
    """The grid directory holds the cold start all variants share (sft_lora/) and grid.json with the base config.
    A changed base config under the same grid name stops (training.check_run_config's message); overwrite=True
    deletes the whole grid's results. Each variant is then checked against its own <grid>/<name>/config.json
    by pipeline.Experiment, so variants of one grid never compare against each other."""
    import json
    import shutil

    from .config import ConfigError

    path = grid_dir / "grid.json"
    if overwrite:
        if runtime.is_main_process():
            for child in grid_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            print(f"[ablations] OVERWRITE: deleted the earlier results in {grid_dir}")
        return
    if path.exists():
        try:
            saved = json.loads(path.read_text()).get("base", {})
        except ValueError:
            return
        diffs = training.config_differences(saved, base_cfg)
        if diffs:
            raise ConfigError(training.mismatch_message(grid_dir, diffs))


def _run_variant(cfg: RunConfig, variant: dict, *, backend: str, load_model: Callable, grid_dir: Path,
                 dynamics_pool_size: int = 8, disk: dict | None = None) -> dict:
    """Load a fresh model, share the grid's cold start, train (resuming), evaluate, write results.json."""
    model, tokenizer = load_model(cfg)
    if disk is not None and not disk["printed"]:
        est = training.lora_disk_estimate(model, cfg, backend)
        total = est["peak_run_bytes"] + est["finished_run_bytes"] * (disk["variants"] - 1)
        print(f"[ablations] disk estimate: {est['lora_parameters'] / 1e6:.1f} M LoRA parameters, "
              f"{est['checkpoint_bytes'] / 2**30:.2f} GiB per checkpoint (x{cfg.save_total_limit} while a variant "
              f"trains), {est['adapter_bytes'] / 2**20:.0f} MiB per finished variant (checkpoints are deleted when it "
              f"finishes): about {total / 2**30:.1f} GiB at most for {disk['variants']} variants.")
        disk["printed"] = True
    exp = pipeline.Experiment(cfg, backend=backend, model=model, tokenizer=tokenizer)
    exp.cold_start(sft_dir=grid_dir)  # one cold start per grid: every variant starts from the same policy
    _, start_df = start_eval(exp, grid_dir)
    callbacks = []
    if start_df is not None and dynamics_pool_size > 0:
        pool = dynamics_pool(exp.tokenizer, start_df, exp.test_rows, n=dynamics_pool_size)
        callbacks.append(DynamicsCallback(exp.run_dir / "dynamics.csv", exp.tokenizer, pool))
    lp = logprob_reward(exp.model, exp.tokenizer, transform=variant["transform"], scorer=variant["scorer"],
                        floor=variant["floor"])
    trainer_cls = sft_term_trainer_class(variant["sft_weight"]) if variant["sft_weight"] > 0 else None
    exp.train(list(RULE_REWARD_FUNCS.values()) + [lp], extra_metrics=lp.stats.flush, trainer_cls=trainer_cls,
              extra_callbacks=callbacks)
    after, _ = exp.evaluate("after")
    results = {"variant": variant, "eval": after, "sft": exp.sft,
               "train": {"status": exp.result.status, "steps": exp.result.steps,
                         "seconds_this_session": round(exp.result.seconds, 1)}}
    if exp.is_main:
        runtime.atomic_write_json(exp.run_dir / "results.json", results)
    return results


def start_eval(exp, grid_dir: Path):
    """(summary, DataFrame) of the shared starting policy's greedy answers, cached in the grid directory."""
    import pandas as pd

    path = Path(grid_dir) / "eval_samples_start.csv"
    if not exp.is_main:
        return {}, None
    if path.exists():
        df = pd.read_csv(path, keep_default_na=False, dtype={"question": str, "gold": str, "completion": str})
    else:
        # On Unsloth the SFT lives in an adapter that vLLM must be given explicitly.
        sft = Path(grid_dir) / "sft_lora"
        lora = sft if exp.backend == "unsloth" and exp.cfg.sft_steps and sft.exists() else None
        _, df = evaluation.evaluate(exp.model, exp.tokenizer, exp.test_rows, exp.cfg, backend=exp.backend,
                                    label="start", lora_path=lora)
        runtime.atomic_write_csv(path, df)
    return evaluation.summarize(df, "start"), df


# ---------------------------------------------------------------------------------------
# Aggregation
def _tail_mean(df, col: str, frac: float = 0.25) -> float:
    """Mean of `col` over the last `frac` of logged steps (at least one row); NaN when absent."""
    if col not in df or df[col].dropna().empty:
        return float("nan")
    s = df[col].dropna()
    return float(s.tail(max(1, int(round(len(s) * frac)))).mean())


def _col_mean(df, col: str) -> float:
    return float(df[col].mean()) if col in df and not df[col].dropna().empty else float("nan")


def variant_row(run_dir: str | Path) -> dict:
    """One table row from a variant's results.json and metrics.csv.

    Accuracy, gold perplexity and eval length: the greedy "after" evaluation. reward_std and
    frac_reward_zero_std: mean over all steps (how much signal the groups carried). reward, kl and
    train completion length: mean over the last quarter of steps (where training ended). wall_time_s:
    median step interval × steps, which ignores the gaps of interrupted sessions.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    v, ev = res.get("variant", {}), res.get("eval", {})
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    if (run_dir / "effective_args.json").exists():  # what the trainer really used (Unsloth may change it)
        eff = json.loads((run_dir / "effective_args.json").read_text())
        cfg = {**cfg, "scale_rewards": eff.get("scale_rewards"), "loss_type": eff.get("loss_computed_as")}
        v = {k: val for k, val in v.items() if k not in ("scale_rewards", "loss_type")}
    m = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists() else pd.DataFrame()
    steps = int(m["step"].max()) if "step" in m and len(m) else int(res.get("train", {}).get("steps", 0))
    step_s = float(m["time"].diff().median()) if "time" in m and len(m) > 1 else float("nan")
    wall = step_s * steps if math.isfinite(step_s) else float(res.get("train", {}).get("seconds_this_session", "nan"))
    return {
        "variant": v.get("name", run_dir.name),
        **{k: v.get(k) for k in ("transform", "scorer", "format_rewards", "logprob_weight", "sft_weight")},
        **{k: v.get(k, cfg.get(k, RunConfig.__dataclass_fields__[k].default)) for k in ("scale_rewards", "loss_type")},
        "steps": steps,
        "wall_time_s": round(wall, 1) if math.isfinite(wall) else wall,
        "strict_accuracy": ev.get("strict_accuracy", float("nan")),
        "lenient_accuracy": ev.get("lenient_accuracy", float("nan")),
        "format_rate": ev.get("format_rate", float("nan")),
        "gold_ppl_median": ev.get("gold_ppl_median", float("nan")),
        "gold_answer_ppl_median": ev.get("gold_answer_ppl_median", float("nan")),  # answer tokens, no closing tag
        "eval_length_tokens": ev.get("mean_length_tokens", float("nan")),
        "train_completion_length": _tail_mean(m, "completions/mean_length"),
        "reward": _tail_mean(m, "reward"),
        "reward_std": _col_mean(m, "reward_std"),
        "frac_reward_zero_std": _col_mean(m, "frac_reward_zero_std"),
        "kl": _tail_mean(m, "kl"),
    }


def aggregate(grid_dir: str | Path, names: Sequence[str] | None = None, same_as: dict[str, str] | None = None):
    """One DataFrame row per variant with results.json (in `names` order, else folder order), plus a
    "start" row (the shared starting policy, no GRPO) when the grid evaluated it. A variant skipped because
    it coincides with another on this backend (`same_as`) gets a row naming that variant."""
    import pandas as pd

    grid_dir = Path(grid_dir)
    same_as = same_as or {}
    names = list(names) if names is not None else sorted(p.name for p in grid_dir.iterdir() if p.is_dir())
    rows = []
    for n in names:
        if (grid_dir / n / "results.json").exists():
            rows.append(variant_row(grid_dir / n))
        elif n in same_as:
            rows.append({"variant": n, "same_as": same_as[n]})
    start = grid_dir / "eval_samples_start.csv"
    if start.exists():
        s = evaluation.summarize(pd.read_csv(start, keep_default_na=False), "start")
        rows.insert(0, {"variant": "start", "steps": 0, "strict_accuracy": s["strict_accuracy"],
                        "lenient_accuracy": s["lenient_accuracy"], "format_rate": s["format_rate"],
                        "gold_ppl_median": s.get("gold_ppl_median", float("nan")),
                        "gold_answer_ppl_median": s.get("gold_answer_ppl_median", float("nan")),
                        "eval_length_tokens": s["mean_length_tokens"]})
    table = pd.DataFrame(rows)
    full = [r for r in rows if "same_as" not in r and r.get("variant") != "start"]
    order = list(full[-1]) if full else []  # a trained variant's row has every column, in reading order
    return table[order + [c for c in table.columns if c not in order]]


# ---------------------------------------------------------------------------------------
# The SFT term: λ·NLL(gold answer | prompt, own reasoning), with gradient
SFT_KEYS = ("sft_input_ids", "sft_attention_mask", "sft_target_mask")


def sft_batch(tokenizer, prompts: Sequence[str], completions: Sequence[str], golds: Sequence[str], *,
              max_length: int | None = None) -> dict:
    """Right-padded ids of prompt + own reasoning + "<answer>\\n" + gold + "\\n</answer>", and a target mask.

    The same context/target split as the logprob reward (gold_context_target), tokenized jointly
    (encode_pair), so the SFT term and the reward score exactly the same tokens.
    """
    import torch

    from .logprob import encode_pair, gold_context_target

    encoded = [encode_pair(tokenizer, *gold_context_target(p, c, str(g))[:2], max_length)
               for p, c, g in zip(prompts, completions, golds)]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    target = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, first) in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        target[row, first:len(ids)] = 1
    return dict(zip(SFT_KEYS, (input_ids, attention, target)))


def answer_nll(model, input_ids, attention_mask, target_mask):
    """Mean NLL of the target tokens (token-weighted over the batch), with gradient.

    The LM head runs only where a target token is predicted (as in the scorer), and never through
    `model(...).logits`, which Unsloth may fill with hidden states."""
    from .logprob import body_and_head, hidden_states, target_logprobs

    hidden, _ = hidden_states(model, input_ids, attention_mask)
    head = body_and_head(model)[1]
    predicts = target_mask[:, 1:].bool()  # token j is predicted by the hidden state at j-1
    lps = target_logprobs(hidden[:, :-1][predicts], head, input_ids[:, 1:][predicts], head.weight.shape[0])
    return -lps.mean()


def sft_term_trainer_class(sft_weight: float, base=None):
    """A GRPOTrainer subclass whose loss is the GRPO loss + sft_weight × NLL(gold | prompt, own reasoning).

    This is the supervised half of VeriFree / JEPO: the reward log P(gold | p, r) also has a gradient
    through the answer tokens, which TRL's reward-function path drops (rewards are plain floats). trl is
    imported here, not at module import (Unsloth must patch it first on GPU).
    """
    if base is None:
        from trl import GRPOTrainer as base

    class SFTTermGRPOTrainer(base):
        SFT_WEIGHT = float(sft_weight)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            from .logprob import prompt_text

            tok = self.processing_class
            # Decoded exactly as TRL decodes them for the reward functions.
            completions = tok.batch_decode(out["completion_ids"], skip_special_tokens=True)
            prompt_max = getattr(self, "max_prompt_length", None)
            limit = prompt_max + getattr(self, "max_completion_length", 0) + 64 if prompt_max else None
            batch = sft_batch(tok, [prompt_text(tok, x["prompt"]) for x in inputs], completions,
                              [x["answer"] for x in inputs], max_length=limit)
            # Tensors with the batch as first dimension survive TRL's shuffle and split into micro-batches.
            out.update({k: t.to(out["completion_ids"].device) for k, t in batch.items()})
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rest = {k: v for k, v in inputs.items() if k not in SFT_KEYS}
            loss = super().compute_loss(model, rest, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
            if self.SFT_WEIGHT == 0 or not all(k in inputs for k in SFT_KEYS):
                return loss
            nll = answer_nll(self.accelerator.unwrap_model(model), *(inputs[k] for k in SFT_KEYS))
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["sft_term"].append(self.accelerator.gather(nll.detach()).mean().item())
            return loss + self.SFT_WEIGHT * nll

    return SFTTermGRPOTrainer


# ---------------------------------------------------------------------------------------
# Training dynamics: likelihood, perplexity and entropy on a fixed pool, after every checkpoint
DYNAMICS_KINDS = {"own": "gold answer after the model's own (start) reasoning",
                  "ref": "GSM8K reference solution in tag format"}


def dynamics_pool(tokenizer, samples, test_rows: Sequence[dict], n: int = 8) -> list[dict]:
    """A fixed pool of (kind, context, target): the gold answer after each of the first `n` saved eval
    completions (`samples`: question, gold, completion columns) and the first `n` reference solutions."""
    from .data import format_solution, make_prompt
    from .logprob import gold_context_target, prompt_text

    pool = []
    for q, g, c in list(zip(samples["question"], samples["gold"], samples["completion"]))[:n]:
        context, target, _ = gold_context_target(prompt_text(tokenizer, make_prompt(q)), str(c), str(g))
        pool.append({"kind": "own", "context": context, "target": target})
    for r in list(test_rows)[:n]:
        pool.append({"kind": "ref", "context": prompt_text(tokenizer, make_prompt(r["question"])),
                     "target": format_solution(r["answer"])})
    return pool


def target_token_stats(model, encoded: Sequence[tuple[list[int], int]], *, pad_id: int = 0, batch_size: int = 4,
                       chunk: int = 256) -> list[tuple[list[float], list[float]]]:
    """Per pair: (log-prob of each target token, entropy of the model's next-token distribution there).
    No gradient; the model's mode is restored. The LM head runs in chunks of `chunk` positions."""
    import torch

    from .logprob import body_and_head, eval_mode, hidden_states, to_logits

    head = body_and_head(model)[1]
    vocab, device = head.weight.shape[0], head.weight.device
    out: list = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    with torch.no_grad(), eval_mode(model):
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i][0])] = torch.tensor(encoded[i][0])
                mask[row, :len(encoded[i][0])] = 1
            hidden, _ = hidden_states(model, ids.to(device), mask.to(device))
            for row, i in enumerate(idx):
                seq, first = encoded[i]
                h = hidden[row, first - 1:len(seq) - 1]
                tgt = torch.tensor(seq[first:], device=device)
                lps, ents = [], []
                for c in range(0, len(tgt), chunk):
                    logp = torch.log_softmax(to_logits(h[c:c + chunk], head, vocab).float(), dim=-1)
                    lps += logp.gather(-1, tgt[c:c + chunk, None]).squeeze(-1).tolist()
                    ents += (-(logp.exp() * logp).sum(-1)).tolist()
                out[i] = (lps, ents)
    return out


def dynamics_stats(model, tokenizer, pool: Sequence[dict], *, batch_size: int = 4) -> dict[str, float]:
    """Per pool kind: mean log-likelihood of a target (nats), token perplexity and mean token entropy."""
    from .logprob import encode_pair

    encoded = [encode_pair(tokenizer, it["context"], it["target"]) for it in pool]
    stats = target_token_stats(model, encoded, pad_id=tokenizer.pad_token_id or 0, batch_size=batch_size)
    row: dict[str, float] = {}
    for kind in dict.fromkeys(it["kind"] for it in pool):
        mine = [st for it, st in zip(pool, stats) if it["kind"] == kind]
        lps = [x for lp, _ in mine for x in lp]
        ents = [x for _, e in mine for x in e]
        row[f"{kind}/loglik"] = sum(sum(lp) for lp, _ in mine) / len(mine)
        row[f"{kind}/ppl"] = math.exp(-sum(lps) / len(lps))
        row[f"{kind}/entropy"] = sum(ents) / len(ents)
    return row


def DynamicsCallback(path: str | Path, tokenizer, pool: Sequence[dict], batch_size: int = 4):  # noqa: N802
    """A TrainerCallback writing dynamics_stats of the pool to `path` (one row per step) at the start of
    training and after every checkpoint save. Main process only; resumed runs drop rows past the checkpoint."""
    from transformers import TrainerCallback

    class _Dynamics(TrainerCallback):
        def __init__(self):
            self.csv: training.MetricsCSV | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return
            self.csv = training.MetricsCSV(path)
            self.csv.truncate_after(state.global_step)
            if state.global_step == 0:
                self._record(0, model)

        def on_save(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero and self.csv is not None:
                self._record(state.global_step, model)

        def _record(self, step: int, model) -> None:
            if model is None or any(hasattr(p, "ds_id") for p in model.parameters()):
                return  # ZeRO-3 shards the weights: one process alone cannot run the model
            t0 = time.time()
            row = {"step": step, **dynamics_stats(model, tokenizer, pool, batch_size=batch_size)}
            self.csv.append(row | {"seconds": round(time.time() - t0, 2)})

    return _Dynamics()
