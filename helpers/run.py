"""Command line: run a notebook's experiment headless, writing the same run directory.

    python -m helpers.run --stage rule --preset cpu
    python -m helpers.run --stage logprob --preset t4 --set transform=gmean_prob --set max_steps=300
    python -m helpers.run --stage ablation --preset cpu
    python -m helpers.run --stage writing --preset cpu --set reward=vrcli
    python -m helpers.run --stage export --preset cpu --run-name 01_rule_based   # -> runs/01_rule_based/merged/
    python -m helpers.run --stage sft_vs_grpo --preset cpu   # notebook 05, part 1 (then llh_select, rerank, first_error)

A run name that already holds a run made with a different configuration stops with the differing fields; pass
`--overwrite` to delete that run's results and train again (or pick another --run-name).

`--set key=value` overrides any RunConfig field (values parsed as JSON when they parse, else strings);
`transform` and `scorer` are options of the logprob stage; `reward` (mean | vrcli) of the writing stage. The notebooks and this CLI call the same
functions in helpers.pipeline (notebook 05's four stages: helpers.beyond, run directory 05_beyond; each caches its
outputs and skips finished work; sft_vs_grpo reuses notebooks 01/02's runs, `--set rule_run=...`/`logprob_run=...`).
"""
from __future__ import annotations

import argparse
import json
import sys

from . import config, pipeline, runtime

STAGES = {
    "rule": "notebook 01: GRPO with rule rewards (format + correctness)",
    "logprob": "notebook 02: GRPO with format rewards + log P(gold | prompt, own reasoning)",
    "ablation": "notebook 03: the preset's normalization ablation grid (helpers/ablations/grid.py GRIDS)",
    "writing": "notebook 04: story continuation, plan rewarded by the likelihood of a reference (mean | vrcli)",
    "export": "merge a finished run's LoRA into the base model: <run dir>/merged/ (helpers/export.py)",
    "sft_vs_grpo": "notebook 05, part 1: SFT on reference solutions vs GRPO (rule, logprob), equal question exposures",
    "llh_select": "notebook 05, part 2: SFT on high / low / random base-likelihood subsets, typed dynamics (SLM JSON)",
    "rerank": "notebook 05, part 3: N samples per probe question, pass@k, maj@k, rerank@1 by three scores",
    "first_error": "notebook 05, part 4: first wrong step of solutions with one injected error, vs baselines",
}
BEYOND_STAGES = ("sft_vs_grpo", "llh_select", "rerank", "first_error")


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise config.ConfigError(f"--set {item!r}: expected key=value, e.g. --set max_steps=10")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.run", description=__doc__.split("\n\n")[0],
        epilog="stages:\n" + "\n".join(f"  {k:11s} {v}" for k, v in STAGES.items())
        + "\npresets: " + ", ".join(config.PRESETS), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=list(STAGES))
    ap.add_argument("--preset", default=None, help="smoke | cpu | t4 | a100 (default: $GRPO_PRESET, else by hardware)")
    ap.add_argument("--run-name", default=None,
                    help="run folder name (default: 01_rule_based / 02_logprob / 05_beyond for notebook 05's stages)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a RunConfig field")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the run directory's earlier results and train again (OVERWRITE=True in a notebook)")
    ap.add_argument("--gguf", default=None, metavar="QUANT", help="export: also write a GGUF (unsloth backend only)")
    ap.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                    help="export: push the merged model (token from Colab's secrets HF_TOKEN only)")
    args = ap.parse_args(argv)
    if args.stage == "export":
        return _export(args)
    try:
        sets = _parse_sets(args.set)
        transform, scorer = sets.pop("transform", "mean"), sets.pop("scorer", "policy")
        kind = sets.pop("reward", "mean")
        preset = config.choose_preset(args.preset)
        runs = {k: sets.pop(k) for k in ("rule_run", "logprob_run") if k in sets}
        if runs and args.stage not in BEYOND_STAGES:
            raise config.ConfigError(f"--set {'/'.join(runs)} is an option of notebook 05's stages only.")
        if args.stage in BEYOND_STAGES:
            from . import beyond

            cfg = beyond.beyond_config(preset, **({"run_name": args.run_name} if args.run_name else {}), **sets)
            config.validate(cfg, num_processes=runtime.num_processes())
        elif args.stage == "writing":
            from . import writing

            cfg = writing.writing_config(preset, kind, **({"run_name": args.run_name} if args.run_name else {}),
                                         **sets)
            config.validate(cfg, num_processes=runtime.num_processes())
        elif args.stage == "ablation":
            from . import ablations

            cfg = ablations.base_config(preset, **({"run_name": args.run_name} if args.run_name else {}), **sets)
            variants = ablations.validate_variants(ablations.GRIDS[preset], cfg)
        else:
            run_name = args.run_name or {"rule": "01_rule_based", "logprob": "02_logprob"}[args.stage]
            if args.stage == "logprob":
                sets.setdefault("reward_weights", pipeline.logprob_weights(transform))
            cfg = config.preset(preset, run_name=run_name, **sets)
            config.validate(cfg, num_processes=runtime.num_processes())
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = runtime.pick_backend(config.backend_request(cfg))
    runtime.banner(backend, cfg)
    try:
        if args.stage in BEYOND_STAGES:
            return _run_beyond(args, cfg, backend, runs)
        return _run_stage(args, cfg, backend, variants if args.stage == "ablation" else None, kind, transform, scorer)
    except config.ConfigError as exc:  # e.g. the run name holds a run made with another config (--overwrite)
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_stage(args, cfg, backend, variants, kind, transform, scorer) -> int:
    if args.stage == "ablation":
        from . import ablations
        from . import ablation_plots, plots

        table = ablations.run_grid(cfg, variants, backend=backend, overwrite=args.overwrite)
        if table is not None:
            grid_dir = runtime.run_dir(cfg.project, cfg.run_name)
            ablation_plots.report(grid_dir, table, plots.run_label(cfg.model_name, f"{cfg.max_steps} per variant", precision=cfg.precision, task=cfg.task))
            print(table.to_string(index=False))
            runtime.saved_files(grid_dir)
        return 0
    if args.stage == "writing":
        from . import writing

        exp = writing.run_writing_stage(cfg, kind, backend=backend, overwrite=args.overwrite)
    elif args.stage == "rule":
        exp = pipeline.run_rule_stage(cfg, backend=backend, overwrite=args.overwrite)
    else:
        exp = pipeline.run_logprob_stage(cfg, transform=transform, scorer=scorer, backend=backend,
                                         overwrite=args.overwrite)
    if exp.is_main:
        print(exp.table().to_string(index=False))
        exp.saved_files()
    return 0


def _run_beyond(args, cfg, backend, runs: dict) -> int:
    from . import beyond

    exp, res = beyond.run_part(cfg, args.stage, backend=backend, overwrite=args.overwrite, **runs)
    if exp.is_main:
        for name, value in res.items():
            if hasattr(value, "to_string"):
                print(f"\n{name}:\n{value.to_string(index=False)}")
        if args.stage == "first_error":
            print("\n" + "\n\n".join(exp.error_examples(2)))
        exp.saved_files()
    return 0


def _export(args) -> int:
    from . import export

    if not args.run_name:
        print("error: --stage export needs --run-name (the run folder to export)", file=sys.stderr)
        return 2
    try:
        project = config.preset(config.choose_preset(args.preset), **_parse_sets(args.set)).project
        run_dir = runtime.runs_root(project) / args.run_name
        cfg = export.run_config(run_dir)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = runtime.pick_backend(config.backend_request(cfg))
    info = export.export_run(run_dir, backend, gguf=args.gguf, push_to_hub=args.push_to_hub)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
