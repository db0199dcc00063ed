"""benchmarks/learning.py without a model: the last line, the per-seed and pooled comparison tables, the transfer
tables and the transfer CSV names it reads back from the runs. Fast."""
import importlib.util
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import config, pipeline, probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning_benchmark", ROOT / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert str(ROOT) in sys.path
    return module


def frame(correct, fmt=None, gold=None, questions=None, lenient=None):
    n = len(correct)
    return pd.DataFrame({
        "question": questions or [f"q{i}" for i in range(n)],
        "format_ok": fmt if fmt is not None else [True] * n,
        "strict_correct": correct,
        "lenient_correct": lenient if lenient is not None else correct,
        "gold_answer_logprob": gold if gold is not None else [-5.0] * n,
        "gold_logprob": [g - 1.0 for g in (gold if gold is not None else [-5.0] * n)],
    })


N = 200
START = frame([False] * N, fmt=[i % 2 == 0 for i in range(N)], gold=[-8.0 + (i % 5) * 0.1 for i in range(N)])


def rule_gain(seed):
    """The rule run after GRPO: 30 % more questions right (a few different ones per seed), more formatted."""
    return frame([(i + seed) % 10 < 3 for i in range(N)], fmt=[i % 4 != 0 for i in range(N)],
                 gold=[-8.0 + (i % 5) * 0.1 for i in range(N)])


def no_change(seed):
    """The logprob run after GRPO: strict accuracy moves both ways on a few questions and nets 0; gold log-prob up."""
    correct = [False] * N
    for i in range(seed, seed + 20, 2):
        correct[i] = True
    start = [False] * N
    for i in range(seed + 1, seed + 21, 2):
        start[i] = True
    return frame(correct, fmt=[i % 2 == 0 for i in range(N)], gold=[-7.0 + (i % 5) * 0.1 for i in range(N)]), start


def test_last_line_has_the_old_keys_the_new_ones_and_matches_the_docstring(learning):
    values = {}
    for i, (key, (ci_key, _, _)) in enumerate(learning.HEADLINE.items()):
        values[key], values[ci_key] = 0.1 * i, [-0.05 * i, 0.2 * i]
    line = learning.format_line(values, 12.34)
    assert line.startswith("format_delta=0.000 format_ci95=-0.000,0.000 gold_logprob_delta=0.100 "
                           "gold_logprob_ci95=-0.050,0.200 logprob_vs_rule=0.200 logprob_vs_rule_ci95=-0.100,0.400 ")
    assert " accuracy_delta=0.300 accuracy_ci95=-0.150,0.600 " in line
    assert "accuracy_logprob_vs_rule=0.600 accuracy_logprob_vs_rule_ci95=-0.300,1.200 minutes=12.3" in line
    assert line.endswith(" minutes=12.3")
    keys = [part.split("=")[0] for part in line.split()]
    for key in ("format_delta", "format_ci95", "gold_logprob_delta", "gold_logprob_ci95", "logprob_vs_rule",
                "logprob_vs_rule_ci95", "accuracy_delta", "accuracy_ci95", "rule_accuracy_delta",
                "rule_accuracy_ci95", "logprob_accuracy_delta", "logprob_accuracy_ci95", "accuracy_logprob_vs_rule",
                "accuracy_logprob_vs_rule_ci95", "minutes"):
        assert keys.count(key) == 1, key
    # the docstring's spelled-out last line has exactly these keys in this order
    doc = next(ln for ln in learning.__doc__.splitlines() if ln.startswith("format_delta="))
    assert [p.split("=")[0] for p in doc.split()] == keys
    assert re.fullmatch(r"(\S+=-?\d+\.\d{3}(,-?\d+\.\d{3})? )+minutes=\d+\.\d", line)
    assert "minutes" not in learning.format_line(values)  # the pooled line has no time


def test_a_real_accuracy_gain_is_up_and_no_change_is_within_noise(learning):
    runs, starts = [], []
    for seed in (1, 2, 3):
        lp, _ = no_change(seed)
        runs.append({"rule": rule_gain(seed), "logprob": lp})
    one = learning.compare(runs[:1], START)
    pooled = learning.compare(runs, START)
    for table, n in ((one, N), (pooled, 3 * N)):
        assert set(table["comparison"]) == {"start -> rule", "start -> logprob", "rule -> logprob"}
        assert set(table["metric"]) == set(probe.PROBE_METRICS)
        assert (table["n"] == n).all()
        row = table.set_index(["comparison", "metric"])
        up = row.loc[("start -> rule", "strict_accuracy")]
        assert up["delta"] == pytest.approx(0.3) and up["ci95_lo"] > 0 and up["verdict"] == "up"
        assert row.loc[("start -> rule", "lenient_accuracy")]["verdict"] == "up"
        flat = row.loc[("start -> logprob", "strict_accuracy")]  # 10 right, all new: vs a start with none right
        assert flat["delta"] == pytest.approx(0.05)
        gold = row.loc[("start -> logprob", "gold_answer_logprob")]
        assert gold["delta"] == pytest.approx(1.0) and gold["verdict"] == "up"
        assert row.loc[("rule -> logprob", "strict_accuracy")]["verdict"] == "down"
        h = learning.headline(table)
        assert h["accuracy_delta"] == h["rule_accuracy_delta"] == pytest.approx(0.3)
        assert h["accuracy_ci95"] == h["rule_accuracy_ci95"] and h["accuracy_ci95"][0] > 0
        assert h["logprob_accuracy_delta"] == pytest.approx(0.05)
        assert h["accuracy_logprob_vs_rule"] == pytest.approx(-0.25) and h["accuracy_logprob_vs_rule_ci95"][1] < 0
        assert h["gold_logprob_delta"] == pytest.approx(1.0)
    assert one["delta_sd"].isna().all() and pooled["delta_sd"].notna().all()
    # one seed: exactly probe.changes' numbers (what the per-seed tables print)
    ref = probe.changes(runs[0]["rule"], START).set_index("metric")
    mine = one[one["comparison"] == "start -> rule"].set_index("metric")
    for col in ("delta", "ci95_lo", "ci95_hi", "verdict"):
        assert list(mine[col]) == list(ref.loc[mine.index, col])


def test_no_change_gives_within_noise_and_an_interval_containing_zero(learning):
    runs = []
    for seed in (1, 2):
        lp, start_correct = no_change(seed)
        runs.append({"rule": frame(start_correct), "logprob": lp})  # the same 10 right vs 10 others right
    start = frame([False] * N)
    table = learning.compare(runs, start).set_index(["comparison", "metric"])
    row = table.loc[("rule -> logprob", "strict_accuracy")]
    assert row["delta"] == 0.0 and row["ci95_lo"] < 0 < row["ci95_hi"] and row["verdict"] == "within noise"
    fmt = table.loc[("start -> rule", "format_rate")]  # identical: a zero-width interval at 0
    assert (fmt["delta"], fmt["ci95_lo"], fmt["ci95_hi"], fmt["verdict"]) == (0.0, 0.0, 0.0, "within noise")
    h = learning.headline(table.reset_index())
    lo, hi = h["accuracy_logprob_vs_rule_ci95"]
    assert h["accuracy_logprob_vs_rule"] == 0.0 and lo < 0 < hi


def test_across_seeds_table_covers_every_probe_metric_with_the_pooled_interval(learning):
    results = {seed: {"rule": rule_gain(seed), "logprob": no_change(seed)[0]} for seed in (1, 2, 3)}
    table = learning.across_seeds(results, START).set_index("metric")
    assert {"strict_accuracy", "lenient_accuracy", "format_rate", "gold_answer_logprob", "gold_logprob"} \
        <= set(table.index) == set(probe.PROBE_METRICS)
    acc = table.loc["strict_accuracy"]
    assert acc["start"] == 0.0 and acc["rule_mean"] == pytest.approx(0.3) and acc["rule_sd"] == 0.0
    assert acc["logprob_minus_rule"] == pytest.approx(-0.25) and acc["ci95_hi"] < 0 and acc["verdict"] == "down"
    gold = table.loc["gold_logprob"]
    assert gold["logprob_minus_rule"] == pytest.approx(1.0) and gold["verdict"] == "up"
    assert gold["logprob_mean"] - gold["start"] == pytest.approx(1.0)


def test_runs_on_different_questions_are_not_paired(learning):
    other = frame([True] * N, questions=[f"x{i}" for i in range(N)])
    with pytest.raises(ValueError, match="different questions"):
        learning.compare([{"rule": other, "logprob": START}], START)


def test_transfer_tables_per_set(learning):
    start = {"svamp": frame([False] * 50), "gsm8k": frame([False] * 40)}
    runs = [{"rule": {"svamp": frame([i < 25 for i in range(50)]), "gsm8k": frame([False] * 40)},
             "logprob": {"svamp": frame([False] * 50), "gsm8k": frame([i < 4 for i in range(40)])}}
            for _ in range(2)]
    table = learning.compare_transfer(runs, start)
    assert list(table.columns[:3]) == ["set", "comparison", "metric"]
    assert set(table["metric"]) == set(pipeline.TRANSFER_METRICS)
    row = table.set_index(["set", "comparison", "metric"])
    assert row.loc[("svamp", "start -> rule", "strict_accuracy")]["delta"] == pytest.approx(0.5)
    assert row.loc[("svamp", "start -> rule", "strict_accuracy")]["n"] == 100
    assert row.loc[("gsm8k", "start -> rule", "strict_accuracy")]["verdict"] == "within noise"
    assert row.loc[("gsm8k", "rule -> logprob", "strict_accuracy")]["delta"] == pytest.approx(0.1)
    assert learning.compare_transfer(runs, {}).empty  # transfer_size=0: no sets, no table


def test_transfer_paths_are_the_files_experiment_transfer_writes(learning, tmp_path):
    for task, sets in (("arith", ["svamp", "gsm8k"]), ("gsm8k", ["svamp"])):
        cfg = config.preset("smoke", dataset_source="bundled", task=task, transfer_size=2)
        exp = object.__new__(pipeline.Experiment)
        exp.cfg, exp.is_main, exp.backend, exp.model, exp.transfers = cfg, True, "hf", None, {}
        exp.run_dir = tmp_path / task
        exp.run_dir.mkdir()
        exp.run_probe = lambda model, rows, label, lora=None: frame([False] * len(rows),
                                                                    questions=[r["question"] for r in rows])
        exp.transfer("end")
        paths = learning.transfer_paths(exp.run_dir, cfg, "end")
        assert list(paths) == sets
        assert sorted(p.name for p in exp.run_dir.iterdir()) == sorted(p.name for p in paths.values())
        assert learning.transfer_paths(exp.run_dir, cfg.override(transfer_size=0), "end") == {}


def test_probe_size_and_set_overrides(learning):
    import argparse

    args = argparse.Namespace(set=["probe_size=6", "transfer_size=3", "self_check=false"], probe_size=None)
    cfg = learning.base_config(args)
    assert (cfg.task, cfg.probe_size, cfg.transfer_size, cfg.self_check) == ("arith", 6, 3, False)
    assert learning.base_config(argparse.Namespace(set=[], probe_size=None)).probe_size == \
        config.preset("cpu").probe_size >= 200
    assert learning.base_config(argparse.Namespace(set=[], probe_size=250)).probe_size == 250
    rule, lp = learning.run_config(cfg, "rule", 2), learning.run_config(cfg, "logprob", 2)
    assert (rule.run_name, rule.seed, lp.run_name) == ("rule_seed2", 2, "logprob_seed2")
    assert lp.reward_weights == pipeline.logprob_weights("mean") != rule.reward_weights


def test_machine_record_names_the_precision_auto_resolved_to_and_the_cpu(learning, monkeypatch):
    """Every result is labelled with what it ran on: fp32 on a CPU without bf16 units, bf16 where they are found."""
    from helpers import runtime

    cfg = config.preset("cpu")
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    rec = learning.machine(cfg)
    assert set(rec) == {"precision", "cpu", "cores", "cpu_bf16_units", "torch_cpu_capability", "torch"}
    assert rec["precision"] == "fp32" and rec["cores"] >= 1 and rec["cpu"]
    assert learning.machine(cfg.override(precision="bf16"))["precision"] == "bf16"  # an explicit choice is kept


def test_a_rerun_reads_finished_runs_without_a_child_and_keeps_their_logs(learning, tmp_path, monkeypatch):
    """`--seeds 2` after `--seeds 1` in the same --runs-dir: seed 1's answers are read, no child process is started
    for it (a child used to reopen its log with "w", emptying the finished run's log), only seed 2 is spawned."""
    import argparse

    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    cfg = config.preset("smoke", dataset_source="bundled", task="arith", transfer_size=2)
    for kind in learning.KINDS:
        path, tpaths = learning.answer_paths(cfg, kind, 1)
        path.parent.mkdir(parents=True)
        frame([kind == "rule"] * 3).to_csv(path, index=False)
        for p in tpaths.values():
            frame([False] * 2).to_csv(p, index=False)
        (tmp_path / f"{learning.run_dir_of(kind, 1)}.log").write_text("the finished run's log\n")
    assert learning.finished(cfg, "rule", 1) and not learning.finished(cfg, "rule", 2)
    spawned = []

    class Done:
        returncode = 0

        def poll(self):
            return 0

    def fake_spawn(kind, seed, args):
        spawned.append((kind, seed))
        for p in (learning.answer_paths(cfg, kind, seed)[0], *learning.answer_paths(cfg, kind, seed)[1].values()):
            p.parent.mkdir(parents=True, exist_ok=True)
            frame([True] * 3).to_csv(p, index=False)
        return Done()

    monkeypatch.setattr(learning, "spawn_run", fake_spawn)
    monkeypatch.setattr(learning.time, "sleep", lambda s: None)
    results, _ = learning.run_all(cfg, [1, 2], rows=None, cold_dir=tmp_path / "cold_start",
                                  args=argparse.Namespace(jobs=2), t_start=0.0)
    assert spawned == [("rule", 2), ("logprob", 2)]
    assert list(results[1]["rule"]["probe"]["strict_correct"]) == [True] * 3  # seed 1 read back as written
    assert list(results[1]["logprob"]["probe"]["strict_correct"]) == [False] * 3
    assert set(results[2]) == set(learning.KINDS) and set(results[1]["rule"]["transfer"]) == {"svamp", "gsm8k"}
    for kind in learning.KINDS:
        assert (tmp_path / f"{learning.run_dir_of(kind, 1)}.log").read_text() == "the finished run's log\n"


def test_every_seed_keys_report_the_weakest_seed(learning):
    seeds = {1: {"headline": {"rule_accuracy_ci95": [0.01, 0.09], "logprob_accuracy_ci95": [0.02, 0.1]}},
             2: {"headline": {"rule_accuracy_ci95": [-0.004, 0.07], "logprob_accuracy_ci95": [0.03, 0.12]}}}
    line = learning.every_seed_keys(seeds, 21.46)
    assert line == ("rule_accuracy_ci95_min_low=-0.004 logprob_accuracy_ci95_min_low=0.020 "
                    "minutes_first_seed=21.5 seeds=1,2")
    assert learning.LATEST.parent.name == "results"
