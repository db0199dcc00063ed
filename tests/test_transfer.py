"""The pipeline's task additions without a model: baseline_results refuses a finished run of another task,
Experiment.transfer caches per set and label, transfer_changes pairs by question. Fast."""
import json

import pandas as pd
import pytest

from helpers import config, pipeline, tasks, training
from helpers.config import ConfigError


def finished_run(rd, cfg_dict):
    """The files load_run_results needs: a final adapter, train_summary.json, eval_table.csv, config.json."""
    (rd / "final_lora").mkdir(parents=True)
    (rd / "final_lora" / "adapter_model.safetensors").write_bytes(b"")
    (rd / "train_summary.json").write_text(json.dumps({"steps": 1}))
    (rd / "config.json").write_text(json.dumps(cfg_dict))
    pd.DataFrame([{"model": "after"}]).to_csv(rd / "eval_table.csv", index=False)
    assert training.is_finished(rd)


@pytest.fixture
def no_training(monkeypatch):
    for name in ("run_rule_stage", "run_logprob_stage"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: pytest.fail("a stage would train"))


def test_baseline_results_refuses_a_finished_run_of_another_task(tmp_path, monkeypatch, no_training):
    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    gsm = config.preset("smoke", task="gsm8k")
    finished_run(tmp_path / "01_rule_based", gsm.to_dict())
    arith = gsm.override(task="arith")
    for stage in ("rule", "logprob"):
        with pytest.raises(ConfigError, match=r"trained on task 'gsm8k'.*needs task 'arith'"):
            pipeline.baseline_results(arith, "01_rule_based", "hf", stage=stage)
    with pytest.raises(ConfigError, match="arith"):  # before the GPU message: the task is the problem
        pipeline.baseline_results(arith, "01_rule_based", "unsloth", probes=True)
    assert pipeline.baseline_results(gsm, "01_rule_based", "hf")["run_dir"] == tmp_path / "01_rule_based"

    # a run saved before RunConfig had `task` was trained on GSM8K
    old = gsm.to_dict()
    del old["task"]
    finished_run(tmp_path / "old", old)
    assert pipeline.baseline_results(gsm, "old", "hf")["config"] == old
    with pytest.raises(ConfigError, match=r"'gsm8k'.*'arith'"):
        pipeline.baseline_results(arith, "old", "hf")
    # the other way round
    finished_run(tmp_path / "a", arith.to_dict())
    with pytest.raises(ConfigError, match=r"trained on task 'arith'.*needs task 'gsm8k'"):
        pipeline.baseline_results(gsm, "a", "hf", stage="logprob")


class FakeScorer:
    """Stands for Experiment.run_probe: strict/lenient correct on the questions `right` picks, every call counted."""

    def __init__(self, right=lambda i, label: False):
        self.calls, self.right = [], right

    def __call__(self, model, rows, label, lora=None):
        self.calls.append(label)
        ok = [self.right(i, label) for i in range(len(rows))]
        return pd.DataFrame({"question": [r["question"] for r in rows], "gold": [r["answer"] for r in rows],
                             "completion": ["NA"] * len(rows), "format_ok": [True] * len(rows),
                             "strict_correct": ok, "lenient_correct": ok})


def experiment(tmp_path, scorer, **overrides):
    """An Experiment without a model: the attributes transfer / transfer_changes / train use."""
    cfg = config.preset("smoke", dataset_source="bundled", **{"task": "arith", "transfer_size": 6, **overrides})
    exp = object.__new__(pipeline.Experiment)
    exp.cfg, exp.is_main, exp.backend, exp.model, exp.tokenizer = cfg, True, "hf", None, None
    exp.run_dir, exp.transfers, exp.result, exp.sft_dir, exp.sft = tmp_path, {}, None, None, {}
    exp.run_probe = scorer
    return exp


def test_transfer_runs_each_set_once_and_caches_it(tmp_path):
    scorer = FakeScorer()
    exp = experiment(tmp_path, scorer)
    start = exp.transfer("start")
    assert list(start) == ["svamp", "gsm8k"] == list(tasks.transfer_sets("arith"))
    assert scorer.calls == ["transfer svamp start", "transfer gsm8k start"]
    assert all(len(df) == 6 for df in start.values())
    assert list(start["svamp"]["question"]) == [r["question"] for r in tasks.transfer_rows("svamp", 6)]
    assert list(start["gsm8k"]["question"]) == [r["question"] for r in tasks.transfer_rows("gsm8k", 6, "bundled")]
    assert sorted(p.name for p in tmp_path.glob("transfer_*.csv")) == ["transfer_gsm8k_start.csv",
                                                                      "transfer_svamp_start.csv"]
    # a second call, and a new Experiment on the same run directory (a re-run), read the CSVs back
    assert set(exp.transfer("start")) == {"svamp", "gsm8k"}
    again = experiment(tmp_path, FakeScorer(lambda *a: pytest.fail("scored again")))
    cached = again.transfer("start")
    assert scorer.calls == ["transfer svamp start", "transfer gsm8k start"]
    for name in start:
        assert list(cached[name]["question"]) == list(start[name]["question"])
        assert list(cached[name]["strict_correct"]) == list(start[name]["strict_correct"])
        assert list(cached[name]["completion"]) == ["NA"] * 6  # an answer "NA" stays text
    # another label is another file
    exp.transfer("end")
    assert scorer.calls[2:] == ["transfer svamp end", "transfer gsm8k end"]


def test_transfer_sets_follow_the_task_and_transfer_size(tmp_path):
    (tmp_path / "g").mkdir()
    scorer = FakeScorer()
    assert list(experiment(tmp_path / "g", scorer, task="gsm8k").transfer("start")) == ["svamp"]
    assert scorer.calls == ["transfer svamp start"]
    (tmp_path / "off").mkdir()
    off = experiment(tmp_path / "off", scorer, transfer_size=0)
    assert off.transfer("start") == {} and scorer.calls == ["transfer svamp start"]
    assert not any((tmp_path / "off").iterdir())
    side = experiment(tmp_path / "off", scorer)
    side.is_main = False  # another process under accelerate: nothing runs, nothing written
    assert side.transfer("start") == {} and not any((tmp_path / "off").iterdir())


def test_transfer_changes_pairs_by_question_with_intervals(tmp_path):
    # after GRPO: every SVAMP question right (from none), GSM8K unchanged
    scorer = FakeScorer(lambda i, label: label == "transfer svamp end")
    exp = experiment(tmp_path, scorer, transfer_size=40)
    with pytest.raises(RuntimeError, match="transfer\\('start'\\)"):
        exp.transfer_changes()
    exp.transfer("start")
    exp.transfer("end")
    table = exp.transfer_changes()
    assert list(table["set"].unique()) == ["svamp", "gsm8k"]
    assert set(table["metric"]) == set(pipeline.TRANSFER_METRICS)
    assert (table["n"] == 40).all()
    row = table.set_index(["set", "metric"])
    up = row.loc[("svamp", "strict_accuracy")]
    assert (up["after cold start"], up["after GRPO"], up["delta"], up["verdict"]) == (0.0, 1.0, 1.0, "up")
    flat = row.loc[("gsm8k", "strict_accuracy")]
    assert flat["delta"] == 0.0 and flat["ci95_lo"] <= 0 <= flat["ci95_hi"] and flat["verdict"] == "within noise"
    saved = pd.read_csv(tmp_path / "transfer_changes.csv")
    assert list(saved["delta"]) == list(table["delta"])

    # a noisy no-change: half the questions flip each way, the interval straddles 0
    (tmp_path / "n").mkdir()
    noisy = experiment(tmp_path / "n", FakeScorer(lambda i, label: (i % 2 == 0) == label.endswith("end")),
                       transfer_size=40)
    noisy.transfer("start")
    noisy.transfer("end")
    row = noisy.transfer_changes().set_index(["set", "metric"]).loc[("svamp", "strict_accuracy")]
    assert row["delta"] == 0.0 and row["ci95_lo"] < 0 < row["ci95_hi"]

    # pairing is by question: answers in another order cannot be compared
    exp.transfers["end"]["svamp"] = exp.transfers["end"]["svamp"].iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="different questions"):
        exp.transfer_changes()


def test_training_again_drops_the_stale_after_grpo_transfer_answers(tmp_path, monkeypatch):
    exp = experiment(tmp_path, FakeScorer())
    exp.transfer("start")
    exp.transfer("end")
    (tmp_path / "transfer_changes.csv").write_text("x\n")
    monkeypatch.setattr(training, "train_grpo", lambda *a, **k: "trained")
    exp.train_dataset = lambda: None
    assert exp.train([]) == "trained"
    assert sorted(p.name for p in tmp_path.glob("transfer_*.csv")) == ["transfer_gsm8k_start.csv",
                                                                      "transfer_svamp_start.csv"]
