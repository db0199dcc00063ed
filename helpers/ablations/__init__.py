"""Ablations of the logprob reward (notebook 03), one job per module:

- `grid`      the schema: LOGPROB_OPTIONS, GRIDS, GRID_OVERRIDES, variant validation and configuration, and
              which variants coincide on a backend;
- `runner`    run_grid: trains and evaluates every variant, resumable;
- `table`     aggregate / variant_row: the ablation table; held_out_changes: paired differences per question;
- `sft_term`  the SFT term λ·NLL(gold | prompt, own reasoning) and the GRPOTrainer subclass that adds it;
- `helpers.dynamics` (shared with other notebooks) the training-dynamics probe; `helpers.ablation_plots` the plots.

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
from ..dynamics import DYNAMICS_KINDS, DynamicsCallback, dynamics_pool, dynamics_stats, target_token_stats
from .grid import (EFFECTIVE_NOTES, GRID_OVERRIDES, GRID_RUN_NAME, GRIDS, LOGPROB_OPTIONS, SHARED_FIELDS,
                   base_config, coinciding_variants, effective_variant, normalized_variant, validate_variants,
                   variant_config, variant_reward_weights)
from .runner import fresh_model_loader, reset_lora, run_grid, start_eval
from .sft_term import SFT_KEYS, answer_nll, sft_batch, sft_term_trainer_class
from .table import (CHANGE_METRICS, CONTROL, aggregate, held_out_changes, pooled_changes, replicate,
                    replicate_groups, variant_row)

__all__ = [
    "DYNAMICS_KINDS", "DynamicsCallback", "dynamics_pool", "dynamics_stats", "target_token_stats",
    "EFFECTIVE_NOTES", "GRID_OVERRIDES", "GRID_RUN_NAME", "GRIDS", "LOGPROB_OPTIONS", "SHARED_FIELDS",
    "base_config", "coinciding_variants", "effective_variant", "normalized_variant", "validate_variants",
    "variant_config", "variant_reward_weights", "fresh_model_loader", "reset_lora", "run_grid", "start_eval",
    "SFT_KEYS", "answer_nll", "sft_batch", "sft_term_trainer_class", "aggregate", "variant_row", "CHANGE_METRICS", "CONTROL", "held_out_changes",
    "pooled_changes", "replicate", "replicate_groups",
]
