"""Benchmark: does GRPO itself move what it optimises? Rule reward (notebook 01) vs logprob reward (notebook 02),
measured on the held-out probe (helpers/probe.py) from the SAME after-cold-start checkpoint.

    1. cold start (SFT) once, shared by every run; probe it             -> "start"
    2. per seed: GRPO with the rule rewards from that checkpoint; probe -> "rule"
                 GRPO with format rewards + the logprob reward (mean); probe -> "logprob"
    3. after minus start for each run's own metric (format rate for rule, answer-token gold log-prob for logprob),
       and logprob minus rule on gold log-prob, each with a paired bootstrap 95 % interval over the probe questions.

Budget: the cpu preset as it is (helpers/config.py: lr 2e-4, beta 0, 25 steps of one question x G=4, 128 tokens;
--set key=value changes it). Runs go to
--runs-dir (default: a temporary folder); a re-run with the same folder reuses finished parts.
With --seeds N > 1 it also prints the mean ± spread (sample std) over seeds of every probe metric, for rule and logprob,
and the pooled interval of their difference (questions × seeds resampled as pairs). The last line is exactly:

format_delta=<x> format_ci95=<lo>,<hi> gold_logprob_delta=<x> gold_logprob_ci95=<lo>,<hi> logprob_vs_rule=<x> logprob_vs_rule_ci95=<lo>,<hi> minutes=<m>

(for the first seed; minutes is the wall time from the start to the first seed's last probe, so with --seeds N it
times one seed, cold start included; the total for all seeds is printed on the line before).

On 2 cores the rule and logprob runs of a seed go at once (--jobs 2, the default), each a child process with one math
thread: measured on the project's 2-core machine, two one-thread probes of 50 questions ran side by side in 172 s and
180 s, where one two-thread probe took 111 s (so two one after the other would take ~222 s). Run: .venv/bin/python benchmarks/learning.py [--seeds 3] [--runs-dir DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, pipeline, probe  # noqa: E402


def log(msg: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def base_config(args) -> config.RunConfig:
    cfg = config.preset("cpu", dataset_source="bundled", project="learning-benchmark")
    for item in args.set:
        key, _, value = item.partition("=")
        cfg = cfg.override(**{key: json.loads(value) if value[:1] in "[{0123456789-tf" else value})
    return cfg


def one_run(cfg, kind: str, seed: int, rows, cold_dir: Path):
    """GRPO (rule or logprob) from the shared cold start; returns the probe DataFrame after training."""
    if kind == "rule":
        run_cfg = cfg.override(run_name=f"rule_seed{seed}", seed=seed)
    else:
        run_cfg = cfg.override(run_name=f"logprob_seed{seed}", seed=seed,
                               reward_weights=pipeline.logprob_weights("mean"))
    path = Path(os.environ["GRPO_RUNS_DIR"]) / run_cfg.run_name / "probe_end.csv"
    if path.exists():  # finished (by a child process of --jobs, or an earlier invocation)
        return probe.cached(path, None)
    exp = pipeline.Experiment(run_cfg, backend="hf")
    exp.cold_start(sft_dir=cold_dir)
    funcs, extra = (pipeline.rule_stage_rewards if kind == "rule" else pipeline.logprob_stage_rewards)(exp)
    t0 = time.time()
    exp.train(funcs, extra_metrics=extra)
    log(f"{kind} seed {seed}: GRPO {exp.result.steps} steps in {time.time() - t0:.0f} s "
        f"({(time.time() - t0) / max(exp.result.steps, 1):.1f} s/step)")
    t0 = time.time()
    df = probe.cached(path, lambda: probe.run(exp.model, exp.tokenizer, rows, run_cfg, label=f"probe {kind}"))
    log(f"{kind} seed {seed}: probe in {time.time() - t0:.0f} s: {probe.summary(df)}")
    return df


def run_dir_of(kind: str, seed: int) -> str:
    return f"{kind}_seed{seed}"


def spawn_run(kind: str, seed: int, args) -> subprocess.Popen:
    """One GRPO run (+ its probe) in a child process with one math thread (--jobs > 1). Its output goes to
    <runs-dir>/<kind>_seed<seed>.log; the parent reads the probe from the run directory when it ends."""
    cmd = [sys.executable, __file__, "--only", f"{kind}:{seed}", "--runs-dir", os.environ["GRPO_RUNS_DIR"],
           "--probe-size", str(args.probe_size)] + [x for item in args.set for x in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = open(Path(os.environ["GRPO_RUNS_DIR"]) / f"{run_dir_of(kind, seed)}.log", "w")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_all(cfg, seeds: list[int], rows, cold_dir: Path, args, t_start: float) -> tuple[dict, float]:
    """Every (seed, kind) run, `args.jobs` at a time (first seed first); ({seed: {kind: probe}}, minutes until the
    first seed's two runs were done)."""
    tasks = [(seed, kind) for seed in seeds for kind in ("rule", "logprob")]
    results: dict = {seed: {} for seed in seeds}
    first_minutes = None
    if args.jobs <= 1:
        for seed, kind in tasks:
            results[seed][kind] = one_run(cfg, kind, seed, rows, cold_dir)
            if first_minutes is None and len(results[seeds[0]]) == 2:
                first_minutes = (time.time() - t_start) / 60
        return results, first_minutes
    running: dict = {}
    pending = list(tasks)
    while pending or running:
        while pending and len(running) < args.jobs:
            seed, kind = pending.pop(0)
            running[(seed, kind)] = spawn_run(kind, seed, args)
            log(f"{kind} seed {seed}: started in a child process (1 thread; log {run_dir_of(kind, seed)}.log)")
        time.sleep(2)
        for key, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            seed, kind = key
            if proc.returncode != 0:
                for other in running.values():
                    other.kill()
                raise SystemExit(f"{kind} seed {seed} failed (exit {proc.returncode}): see "
                                 f"{os.environ['GRPO_RUNS_DIR']}/{run_dir_of(kind, seed)}.log")
            results[seed][kind] = one_run(cfg, kind, seed, rows, cold_dir)  # reads the cached probe
            if first_minutes is None and len(results[seeds[0]]) == 2:
                first_minutes = (time.time() - t_start) / 60
    return results, first_minutes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2,
                    help="GRPO runs at once, each a child process with one thread (default 2: on 2 cores, two "
                         "one-thread runs finish sooner than one two-thread run after the other; 1 = in this process)")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # KIND:SEED, the child of --jobs
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--probe-size", type=int, default=probe.PROBE_SIZE)
    ap.add_argument("--set", action="append", default=[], help="RunConfig override key=value (repeatable)")
    ap.add_argument("--json", default=None, help="write every table and number here")
    args = ap.parse_args()
    t_start = time.time()
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="learning-"))
    os.environ["GRPO_RUNS_DIR"] = str(runs_dir)
    cfg = base_config(args)
    config.validate(cfg)
    if not args.only:
        log(f"runs in {runs_dir}; GRPO lr={cfg.learning_rate} beta={cfg.beta} steps={cfg.max_steps} "
        f"G={cfg.num_generations} batch={cfg.per_device_batch} completion={cfg.max_completion_length} "
            f"SFT {cfg.sft_steps}x{cfg.sft_batch}; {args.jobs} run(s) at a time")
    rows = probe.probe_rows(cfg, n=args.probe_size)
    if args.only:  # a child of --jobs: one run from the cold start the parent made
        kind, seed = args.only.split(":")
        import torch

        torch.set_num_threads(1)
        one_run(cfg, kind, int(seed), rows, runs_dir / "cold_start")
        return

    # 1. the shared cold start, and its probe
    start_cfg = cfg.override(run_name="cold_start")
    exp = pipeline.Experiment(start_cfg, backend="hf")
    cold_dir = exp.run_dir
    t0 = time.time()
    exp.cold_start(sft_dir=cold_dir)
    log(f"cold start: {exp.sft.get('sft')} in {time.time() - t0:.0f} s")
    t0 = time.time()
    start = probe.cached(cold_dir / "probe_start.csv",
                         lambda: probe.run(exp.model, exp.tokenizer, rows, start_cfg, label="probe start"))
    log(f"start probe in {time.time() - t0:.0f} s: {probe.summary(start)}")
    del exp

    # 2. per seed: rule and logprob from that cold start
    results, first_minutes = run_all(cfg, list(range(args.first_seed, args.first_seed + args.seeds)), rows, cold_dir,
                                     args, t_start)

    # 3. tables
    out = {"config": cfg.to_dict(), "probe_rows": [probe.PROBE_OFFSET, probe.PROBE_OFFSET + len(rows)],
           "start": probe.summary(start), "seeds": {}}
    for seed, res in results.items():
        rule_tab = probe.changes(res["rule"], start, names=("start", "rule"))
        lp_tab = probe.changes(res["logprob"], start, names=("start", "logprob"))
        vs = probe.changes(res["logprob"], res["rule"], names=("rule", "logprob"))
        print(f"\nseed {seed}: rule reward, after GRPO minus after cold start\n{rule_tab.to_string(index=False)}")
        print(f"seed {seed}: logprob reward, after GRPO minus after cold start\n{lp_tab.to_string(index=False)}")
        print(f"seed {seed}: logprob run minus rule run\n{vs.to_string(index=False)}")
        out["seeds"][seed] = {"rule": rule_tab.to_dict(orient="records"), "logprob": lp_tab.to_dict(orient="records"),
                              "logprob_vs_rule": vs.to_dict(orient="records")}
    if len(results) > 1:
        out["across_seeds"] = across_seeds(results, start)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))

    log(f"{len(results)} seed(s) in {(time.time() - t_start) / 60:.1f} min in all; cold start + first seed "
        f"{first_minutes:.1f} min")
    first = results[args.first_seed]
    col = probe.PROBE_METRICS["gold_answer_logprob"]
    f = probe.paired_bootstrap(first["rule"]["format_ok"].astype(float), start["format_ok"].astype(float))
    g = probe.paired_bootstrap(first["logprob"][col].astype(float), start[col].astype(float))
    v = probe.paired_bootstrap(first["logprob"][col].astype(float), first["rule"][col].astype(float))
    print(f"format_delta={f[0]:.3f} format_ci95={f[1]:.3f},{f[2]:.3f} gold_logprob_delta={g[0]:.3f} "
          f"gold_logprob_ci95={g[1]:.3f},{g[2]:.3f} logprob_vs_rule={v[0]:.3f} logprob_vs_rule_ci95={v[1]:.3f},"
          f"{v[2]:.3f} minutes={first_minutes:.1f}")


def across_seeds(results: dict, start) -> dict:
    """Mean ± sample std over seeds of each probe metric for rule and logprob, and the pooled paired interval of
    logprob minus rule (every question of every seed one pair)."""
    import pandas as pd

    table = []
    for name, col in probe.PROBE_METRICS.items():
        row = {"metric": name, "start": float(start[col].astype(float).mean())}
        for kind in ("rule", "logprob"):
            vals = [float(r[kind][col].astype(float).mean()) for r in results.values()]
            row[f"{kind}_mean"], row[f"{kind}_sd"] = statistics.mean(vals), statistics.stdev(vals)
        a = pd.concat([r["logprob"][col].astype(float) for r in results.values()])
        b = pd.concat([r["rule"][col].astype(float) for r in results.values()])
        d, lo, hi = probe.paired_bootstrap(a, b)
        row |= {"logprob_minus_rule": d, "ci95_lo": lo, "ci95_hi": hi, "verdict": probe.verdict(lo, hi)}
        table.append(row)
    df = pd.DataFrame(table)
    print(f"\nacross {len(results)} seeds (mean ± sd over seeds; interval pooled over questions x seeds)\n"
          f"{df.to_string(index=False, float_format=lambda x: f'{x:.3f}')}")
    return {"table": df.to_dict(orient="records"), "seeds": list(results)}


if __name__ == "__main__":
    main()
