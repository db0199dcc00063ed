"""Benchmark: does GRPO itself move what it optimises? Rule reward (notebook 01) vs logprob reward (notebook 02),
measured on the held-out probe (helpers/probe.py) from the SAME after-cold-start checkpoint.

    1. cold start (SFT) once, shared by every run; probe it and run the transfer sets on it     -> "start"
    2. per seed: GRPO with the rule rewards from that checkpoint; probe + transfer sets         -> "rule"
                 GRPO with format rewards + the logprob reward (mean); probe + transfer sets    -> "logprob"
    3. after GRPO minus after the cold start for each run on every probe metric (greedy strict and lenient accuracy,
       strict format rate, gold log-prob over the answer tokens and with the closing tag), and logprob run minus
       rule run, each with a paired bootstrap 95 % interval over the probe questions; the same for accuracy and format
       on each transfer set (pipeline.TRANSFER_METRICS).

Budget: the cpu preset as it is (helpers/config.py: the arith task, lr 2e-4, beta 0, 25 steps of two questions x G=8,
96-token answers, a probe of cfg.probe_size = 200 arith problems, cfg.transfer_size = 50 problems of each transfer set:
SVAMP and GSM8K for the arith task, SVAMP only for GSM8K). --set key=value changes it (--probe-size N is
--set probe_size=N; transfer_size=0 turns the transfer sets off). Runs go to --runs-dir (default: a temporary folder);
a re-run with the same folder reuses every finished part: the cold start (cold_start/sft_lora), its probe and transfer
answers (cold_start/probe_start.csv, transfer_<set>_start.csv, computed once and shared by every run), each finished
GRPO run (<kind>_seed<N>/final_lora) and its answers (probe_end.csv, transfer_<set>_end.csv).

Output, per seed: three probe tables (rule run minus start, logprob run minus start, logprob run minus rule run; one
row per probe metric) and one transfer table (one row per set x comparison x metric; comparison "start -> rule" is
the rule run after GRPO minus after the cold start, "rule -> logprob" the logprob run minus the rule run). With
--seeds N > 1 also: the mean ± spread (sample sd) over seeds of every probe metric for start/rule/logprob with the
pooled interval of logprob minus rule; every comparison pooled over seeds (questions x seeds resampled as pairs;
delta_sd is the sample sd over seeds of the per-seed delta), on the probe and on each transfer set; and a line
"pooled over N seeds: ..." with the keys of the last line. The last line is exactly (for the first seed):

format_delta=<x> format_ci95=<lo>,<hi> gold_logprob_delta=<x> gold_logprob_ci95=<lo>,<hi> logprob_vs_rule=<x> logprob_vs_rule_ci95=<lo>,<hi> accuracy_delta=<x> accuracy_ci95=<lo>,<hi> rule_accuracy_delta=<x> rule_accuracy_ci95=<lo>,<hi> logprob_accuracy_delta=<x> logprob_accuracy_ci95=<lo>,<hi> accuracy_logprob_vs_rule=<x> accuracy_logprob_vs_rule_ci95=<lo>,<hi> minutes=<m>

Each key is a probe metric's change with its paired bootstrap 95 % interval (HEADLINE below):
    format_*                    strict format rate,          rule run    minus start
    gold_logprob_*              gold answer-token log-prob,  logprob run minus start
    logprob_vs_rule*            gold answer-token log-prob,  logprob run minus rule run
    accuracy_*                  greedy strict accuracy,      rule run    minus start  (the issue's name; the same
                                                                                       numbers as rule_accuracy_*)
    rule_accuracy_*             greedy strict accuracy,      rule run    minus start
    logprob_accuracy_*          greedy strict accuracy,      logprob run minus start
    accuracy_logprob_vs_rule*   greedy strict accuracy,      logprob run minus rule run
minutes is the wall time from the start to the first seed's last probe, so with --seeds N it times one seed, cold
start included; the total for all seeds is printed on the line before. --json OUT gets every table, the start
summaries, the headline of the first seed ("headline") and, with N > 1 seeds, the pooled one ("pooled_headline").

On 2 cores the rule and logprob runs of a seed go at once (--jobs 2, the default), each a child process with one math
thread that trains, probes and runs the transfer sets, writing them to its run directory, which the parent then reads:
measured on the project's 2-core machine, two one-thread probes of 50 questions ran side by side in 172 s and
180 s, where one two-thread probe took 111 s (so two one after the other would take ~222 s). Run: .venv/bin/python benchmarks/learning.py [--seeds 3] [--runs-dir DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, pipeline, probe, tasks  # noqa: E402

KINDS = ("rule", "logprob")
LATEST = Path(__file__).resolve().parent / "results" / "learning_latest.txt"  # the last line of the latest run
# (from, to): "to" minus "from", paired question by question ("start" is the shared after-cold-start policy)
COMPARISONS = (("start", "rule"), ("start", "logprob"), ("rule", "logprob"))
# last-line key -> (its interval's key, comparison, probe metric)
HEADLINE = {
    "format_delta": ("format_ci95", "start -> rule", "format_rate"),
    "gold_logprob_delta": ("gold_logprob_ci95", "start -> logprob", "gold_answer_logprob"),
    "logprob_vs_rule": ("logprob_vs_rule_ci95", "rule -> logprob", "gold_answer_logprob"),
    "accuracy_delta": ("accuracy_ci95", "start -> rule", "strict_accuracy"),
    "rule_accuracy_delta": ("rule_accuracy_ci95", "start -> rule", "strict_accuracy"),
    "logprob_accuracy_delta": ("logprob_accuracy_ci95", "start -> logprob", "strict_accuracy"),
    "accuracy_logprob_vs_rule": ("accuracy_logprob_vs_rule_ci95", "rule -> logprob", "strict_accuracy"),
}


def log(msg: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine(cfg) -> dict:
    """What the numbers were measured on: the precision 'auto' resolved to, the CPU and its bf16 units (a result
    measured in bf16 on an AMX Xeon and one in fp32 on an AVX2-only CPU differ in time, and slightly in answers)."""
    import torch

    from helpers import runtime

    name = runtime.cpu_model_name()
    return {"precision": runtime.resolve_precision(cfg.precision), "cpu": name, "cores": os.cpu_count(),
            "cpu_bf16_units": ",".join(runtime.cpu_bf16_units()) or "none",
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def base_config(args) -> config.RunConfig:
    cfg = config.preset("cpu", dataset_source="bundled", project="learning-benchmark")
    for item in args.set:
        key, _, value = item.partition("=")
        cfg = cfg.override(**{key: json.loads(value) if value[:1] in "[{0123456789-tf" else value})
    if args.probe_size is not None:
        cfg = cfg.override(probe_size=args.probe_size)
    return cfg


def run_config(cfg, kind: str, seed: int):
    if kind == "rule":
        return cfg.override(run_name=run_dir_of(kind, seed), seed=seed)
    return cfg.override(run_name=run_dir_of(kind, seed), seed=seed, reward_weights=pipeline.logprob_weights("mean"))


def transfer_paths(run_dir: Path, cfg, label: str) -> dict[str, Path]:
    """{set: the CSV Experiment.transfer(label) caches in run_dir}; {} when cfg.transfer_size is 0."""
    if not cfg.transfer_size:
        return {}
    return {name: Path(run_dir) / f"transfer_{name}_{label}.csv" for name in tasks.transfer_sets(cfg.task)}


def one_run(cfg, kind: str, seed: int, rows, cold_dir: Path) -> dict:
    """GRPO (rule or logprob) from the shared cold start; {"probe": probe DataFrame after training, "transfer":
    {set: DataFrame}}. Reads them from the run directory when they are there (written by a child process of --jobs
    or an earlier invocation); a finished run with some answers missing is loaded, not trained again."""
    run_cfg = run_config(cfg, kind, seed)
    run_dir = Path(os.environ["GRPO_RUNS_DIR"]) / run_cfg.run_name
    path, tpaths = answer_paths(cfg, kind, seed)
    if finished(cfg, kind, seed):
        return {"probe": probe.cached(path, None), "transfer": {n: probe.cached(p, None) for n, p in tpaths.items()}}
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
    t0 = time.time()
    transfer = exp.transfer("end")
    if transfer:
        log(f"{kind} seed {seed}: transfer sets {', '.join(transfer)} in {time.time() - t0:.0f} s")
    return {"probe": df, "transfer": transfer}


def answer_paths(cfg, kind: str, seed: int) -> tuple[Path, dict[str, Path]]:
    """(probe_end.csv, {set: transfer_<set>_end.csv}) of one run in $GRPO_RUNS_DIR."""
    run_cfg = run_config(cfg, kind, seed)
    run_dir = Path(os.environ["GRPO_RUNS_DIR"]) / run_cfg.run_name
    return run_dir / "probe_end.csv", transfer_paths(run_dir, run_cfg, "end")


def finished(cfg, kind: str, seed: int) -> bool:
    """Its answers are all there: a re-run reads them instead of training (and keeps that run's log as it was)."""
    path, tpaths = answer_paths(cfg, kind, seed)
    return path.exists() and all(p.exists() for p in tpaths.values())


def run_dir_of(kind: str, seed: int) -> str:
    return f"{kind}_seed{seed}"


def spawn_run(kind: str, seed: int, args) -> subprocess.Popen:
    """One GRPO run (+ its probe and transfer sets) in a child process with one math thread (--jobs > 1). Its output
    goes to <runs-dir>/<kind>_seed<seed>.log; the parent reads the answers from the run directory when it ends."""
    cmd = [sys.executable, __file__, "--only", f"{kind}:{seed}", "--runs-dir", os.environ["GRPO_RUNS_DIR"]]
    cmd += ["--probe-size", str(args.probe_size)] if args.probe_size is not None else []
    cmd += [x for item in args.set for x in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = open(Path(os.environ["GRPO_RUNS_DIR"]) / f"{run_dir_of(kind, seed)}.log", "a")  # a resumed run adds
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_all(cfg, seeds: list[int], rows, cold_dir: Path, args, t_start: float) -> tuple[dict, float]:
    """Every (seed, kind) run, `args.jobs` at a time (first seed first); ({seed: {kind: one_run's dict}}, minutes
    until the first seed's two runs were done)."""
    tasks_ = [(seed, kind) for seed in seeds for kind in KINDS]
    results: dict = {seed: {} for seed in seeds}
    first_minutes = None
    if args.jobs <= 1:
        for seed, kind in tasks_:
            results[seed][kind] = one_run(cfg, kind, seed, rows, cold_dir)
            if first_minutes is None and len(results[seeds[0]]) == 2:
                first_minutes = (time.time() - t_start) / 60
        return results, first_minutes
    running: dict = {}
    pending = list(tasks_)
    while pending or running:
        while pending and len(running) < args.jobs:
            seed, kind = pending.pop(0)
            if finished(cfg, kind, seed):  # an earlier invocation's run: read, no child (its log stays as it was)
                results[seed][kind] = one_run(cfg, kind, seed, rows, cold_dir)
                log(f"{kind} seed {seed}: found its answers in {run_dir_of(kind, seed)}/, not training again")
                if first_minutes is None and len(results[seeds[0]]) == 2:
                    first_minutes = (time.time() - t_start) / 60
                continue
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
            results[seed][kind] = one_run(cfg, kind, seed, rows, cold_dir)  # reads the cached answers
            if first_minutes is None and len(results[seeds[0]]) == 2:
                first_minutes = (time.time() - t_start) / 60
    return results, first_minutes


# ---------------------------------------------------------------------------------------
# Tables (pure functions of probe DataFrames: tests/test_learning_benchmark.py)
def compare(runs: list[dict], start, columns: dict[str, str] = probe.PROBE_METRICS, key: str = "question"):
    """One row per (comparison, metric) of COMPARISONS: `runs` is one {"rule": df, "logprob": df} per seed, `start`
    the shared after-cold-start DataFrame of the same questions. Pairs are questions x seeds (one seed: exactly
    probe.changes' numbers). from/to: the two means; delta = to - from with its paired bootstrap 95 % interval and
    verdict; delta_sd: sample sd over seeds of the per-seed delta (NaN for one seed); n: pairs."""
    import numpy as np
    import pandas as pd

    table = []
    for frm, to in COMPARISONS:
        for name, col in columns.items():
            if col not in start or any(col not in r[k] for r in runs for k in KINDS):
                continue
            a_parts, b_parts = [], []
            for r in runs:
                a_df, b_df = r[to], start if frm == "start" else r[frm]
                if list(a_df[key]) != list(b_df[key]):
                    raise ValueError(f"{frm} and {to} were run on different questions: they cannot be paired.")
                a_parts.append(probe._floats(a_df[col]).to_numpy())
                b_parts.append(probe._floats(b_df[col]).to_numpy())
            a, b = np.concatenate(a_parts), np.concatenate(b_parts)
            delta, lo, hi = probe.paired_bootstrap(a, b)
            per_seed = [float((x - y).mean()) for x, y in zip(a_parts, b_parts)]
            table.append({"comparison": f"{frm} -> {to}", "metric": name, "from": float(b.mean()),
                          "to": float(a.mean()), "delta": delta,
                          "delta_sd": statistics.stdev(per_seed) if len(per_seed) > 1 else math.nan,
                          "ci95_lo": lo, "ci95_hi": hi, "verdict": probe.verdict(lo, hi), "n": int(a.size)})
    return pd.DataFrame(table)


def compare_transfer(runs: list[dict], start_transfer: dict, columns: dict[str, str] = pipeline.TRANSFER_METRICS):
    """compare() on each transfer set: `runs` one {"rule": {set: df}, "logprob": {set: df}} per seed,
    `start_transfer` {set: df} after the cold start; one table with a leading "set" column (empty without sets)."""
    import pandas as pd

    tables = [compare([{k: r[k][name] for k in KINDS} for r in runs], start, columns).assign(set=name)
              for name, start in start_transfer.items()]
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    return table[["set", *[c for c in table.columns if c != "set"]]]


def across_seeds(results: dict, start):
    """Mean ± sample std over seeds of each probe metric for rule and logprob, and the pooled paired interval of
    logprob minus rule (every question of every seed one pair). `results`: {seed: {"rule": df, "logprob": df}}."""
    import pandas as pd

    table = []
    for name, col in probe.PROBE_METRICS.items():
        row = {"metric": name, "start": float(probe._floats(start[col]).mean())}
        for kind in KINDS:
            vals = [float(probe._floats(r[kind][col]).mean()) for r in results.values()]
            row[f"{kind}_mean"], row[f"{kind}_sd"] = statistics.mean(vals), statistics.stdev(vals)
        a = pd.concat([probe._floats(r["logprob"][col]) for r in results.values()])
        b = pd.concat([probe._floats(r["rule"][col]) for r in results.values()])
        d, lo, hi = probe.paired_bootstrap(a, b)
        row |= {"logprob_minus_rule": d, "ci95_lo": lo, "ci95_hi": hi, "verdict": probe.verdict(lo, hi)}
        table.append(row)
    return pd.DataFrame(table)


def headline(table) -> dict:
    """The last line's numbers from a compare() table: {key: delta, interval key: [lo, hi]} (HEADLINE)."""
    out = {}
    for key, (ci_key, comparison, metric) in HEADLINE.items():
        row = table[(table["comparison"] == comparison) & (table["metric"] == metric)]
        if len(row) != 1:
            raise ValueError(f"No {comparison} row for {metric} in the table: cannot report {key}.")
        row = row.iloc[0]
        out[key], out[ci_key] = float(row["delta"]), [float(row["ci95_lo"]), float(row["ci95_hi"])]
    return out


def format_line(values: dict, minutes: float | None = None) -> str:
    """`key=<x> key_ci95=<lo>,<hi> ...` in HEADLINE's order (3 decimals), then minutes=<m> when given."""
    parts = []
    for key, (ci_key, _, _) in HEADLINE.items():
        lo, hi = values[ci_key]
        parts += [f"{key}={values[key]:.3f}", f"{ci_key}={lo:.3f},{hi:.3f}"]
    if minutes is not None:
        parts.append(f"minutes={minutes:.1f}")
    return " ".join(parts)


def show(title: str, table) -> None:
    print(f"{title}\n{table.to_string(index=False, float_format=lambda x: f'{x:.3f}')}" if len(table)
          else f"{title}: (none)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2,
                    help="GRPO runs at once, each a child process with one thread (default 2: on 2 cores, two "
                         "one-thread runs finish sooner than one two-thread run after the other; 1 = in this process)")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # KIND:SEED, the child of --jobs
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--probe-size", type=int, default=None, help="= --set probe_size=N (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], help="RunConfig override key=value (repeatable)")
    ap.add_argument("--json", default=None, help="write every table and number here")
    args = ap.parse_args()
    t_start = time.time()
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="learning-"))
    os.environ["GRPO_RUNS_DIR"] = str(runs_dir)
    cfg = base_config(args)
    config.validate(cfg)
    if not args.only:
        log(f"runs in {runs_dir}; task {cfg.task}, probe {cfg.probe_size}, transfer "
            f"{cfg.transfer_size} x {list(tasks.transfer_sets(cfg.task)) if cfg.transfer_size else []}; GRPO "
            f"lr={cfg.learning_rate} beta={cfg.beta} steps={cfg.max_steps} G={cfg.num_generations} "
            f"batch={cfg.per_device_batch} completion={cfg.max_completion_length} SFT {cfg.sft_steps}x{cfg.sft_batch}; "
            f"{args.jobs} run(s) at a time")
        log("machine: " + ", ".join(f"{k} {v}" for k, v in machine(cfg).items()))
    rows = probe.probe_rows(cfg, n=cfg.probe_size)
    if args.only:  # a child of --jobs: one run from the cold start the parent made
        kind, seed = args.only.split(":")
        import torch

        torch.set_num_threads(1)
        one_run(cfg, kind, int(seed), rows, runs_dir / "cold_start")
        return

    # 1. the shared cold start, its probe and its transfer answers (once: every run is compared with these)
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
    t0 = time.time()
    start_transfer = exp.transfer("start")
    if start_transfer:
        log(f"start transfer sets {', '.join(start_transfer)} in {time.time() - t0:.0f} s")
    del exp

    # 2. per seed: rule and logprob from that cold start
    results, first_minutes = run_all(cfg, list(range(args.first_seed, args.first_seed + args.seeds)), rows, cold_dir,
                                     args, t_start)
    probes = {seed: {k: res[k]["probe"] for k in KINDS} for seed, res in results.items()}
    transfers = {seed: {k: res[k]["transfer"] for k in KINDS} for seed, res in results.items()}

    # 3. tables
    out = {"config": cfg.to_dict(), "task": cfg.task, "machine": machine(cfg),
           "probe_rows": ([probe.PROBE_OFFSET, probe.PROBE_OFFSET + len(rows)] if cfg.task == "gsm8k"
                          else [0, len(rows)]),  # GSM8K test rows, or the first rows of the arith probe split
           "start": probe.summary(start),
           "transfer_start": {name: probe.summary(df, pipeline.TRANSFER_METRICS)
                              for name, df in start_transfer.items()},
           "seeds": {}}
    for seed, res in probes.items():
        rule_tab = probe.changes(res["rule"], start, names=("start", "rule"))
        lp_tab = probe.changes(res["logprob"], start, names=("start", "logprob"))
        vs = probe.changes(res["logprob"], res["rule"], names=("rule", "logprob"))
        tr = compare_transfer([transfers[seed]], start_transfer)
        print(f"\nseed {seed}: rule reward, after GRPO minus after cold start\n{rule_tab.to_string(index=False)}")
        print(f"seed {seed}: logprob reward, after GRPO minus after cold start\n{lp_tab.to_string(index=False)}")
        print(f"seed {seed}: logprob run minus rule run\n{vs.to_string(index=False)}")
        if len(tr):
            show(f"seed {seed}: transfer sets ({cfg.transfer_size} problems each), after GRPO minus after cold start "
                 "(start -> rule, start -> logprob) and logprob run minus rule run (rule -> logprob)",
                 tr.drop(columns=["delta_sd"]))
        out["seeds"][seed] = {"rule": rule_tab.to_dict(orient="records"), "logprob": lp_tab.to_dict(orient="records"),
                              "logprob_vs_rule": vs.to_dict(orient="records"),
                              "transfer": tr.to_dict(orient="records"),
                              "headline": headline(compare([res], start))}
    first_line = out["seeds"][args.first_seed]["headline"]
    out["headline"] = first_line
    pooled = None
    if len(results) > 1:
        table = across_seeds(probes, start)
        changes = compare(list(probes.values()), start)
        tr = compare_transfer(list(transfers.values()), start_transfer)
        show(f"\nacross {len(results)} seeds (mean ± sd over seeds; interval pooled over questions x seeds)", table)
        show(f"across {len(results)} seeds: probe, pooled over questions x seeds (delta_sd: sd over seeds of the "
             "per-seed delta)", changes)
        if len(tr):
            show(f"across {len(results)} seeds: transfer sets, pooled over questions x seeds", tr)
        pooled = headline(changes)
        out["across_seeds"] = {"table": table.to_dict(orient="records"), "changes": changes.to_dict(orient="records"),
                               "transfer": tr.to_dict(orient="records"), "seeds": list(results)}
        out["pooled_headline"] = pooled
    out["minutes"] = {"first_seed": first_minutes, "total": (time.time() - t_start) / 60}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))

    if pooled is not None:
        print(f"pooled over {len(results)} seeds: {format_line(pooled)}")
    log(f"{len(results)} seed(s) in {(time.time() - t_start) / 60:.1f} min in all; cold start + first seed "
        f"{first_minutes:.1f} min")
    line = format_line(first_line, first_minutes) + " " + every_seed_keys(out["seeds"], first_minutes)
    LATEST.write_text(line + "\n")
    print(line)


def every_seed_keys(seeds: dict, first_minutes: float) -> str:
    """The keys that speak for every seed: the lowest per-seed lower bound of the accuracy change of each run (above
    0 = every seed's run solved measurably more held-out problems), the minutes of the cold start + first seed, and
    the seeds."""
    low = {kind: min(s["headline"][f"{kind}_accuracy_ci95"][0] for s in seeds.values()) for kind in KINDS}
    return (f"rule_accuracy_ci95_min_low={low['rule']:.3f} logprob_accuracy_ci95_min_low={low['logprob']:.3f} "
            f"minutes_first_seed={first_minutes:.1f} seeds={','.join(str(s) for s in seeds)}")


if __name__ == "__main__":
    main()
