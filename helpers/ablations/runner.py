"""The grid runner: every variant in its own run directory, from one shared cold start and one shared
"start" evaluation; finished variants are skipped, interrupted ones resumed."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Sequence

from .. import evaluation, pipeline, runtime, training
from ..config import RunConfig
from ..dynamics import DynamicsCallback, dynamics_pool
from ..logprob import logprob_reward
from .grid import EFFECTIVE_NOTES, coinciding_variants, validate_variants, variant_config
from .sft_term import sft_term_trainer_class
from .table import aggregate


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

    from ..config import ConfigError

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
        pool = dynamics_pool(exp.tokenizer, start_df, exp.test_rows, n=dynamics_pool_size, tag_style=cfg.tag_style)
        callbacks.append(DynamicsCallback(exp.run_dir / "dynamics.csv", exp.tokenizer, pool))
    lp = logprob_reward(exp.model, exp.tokenizer, transform=variant["transform"], scorer=variant["scorer"],
                        floor=variant["floor"])
    trainer_cls = sft_term_trainer_class(variant["sft_weight"]) if variant["sft_weight"] > 0 else None
    exp.train(list(exp.rule_rewards().values()) + [lp], extra_metrics=lp.stats.flush, trainer_cls=trainer_cls,
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
