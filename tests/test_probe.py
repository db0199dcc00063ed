"""The held-out probe: rows held out from the evaluations, paired bootstrap intervals, verdicts, history."""
import json

import pandas as pd
import pytest

from helpers import config, probe


def frame(questions, fmt, gold):
    return pd.DataFrame({"question": questions, "format_ok": fmt, "strict_correct": [False] * len(questions),
                         "lenient_correct": [False] * len(questions), "gold_answer_logprob": gold,
                         "gold_logprob": [g - 1.0 for g in gold]})


def test_probe_rows_are_held_out_from_the_evaluations_and_training():
    cfg = config.preset("cpu", dataset_source="bundled", task="gsm8k")
    rows = probe.probe_rows(cfg)
    assert len(rows) == probe.PROBE_SIZE == 100
    from helpers import data

    test = data.load_gsm8k_rows("test", "bundled")
    evaluated = {r["question"] for r in test[:200]}  # every preset's eval_size is at most 200
    trained = {r["question"] for r in data.load_gsm8k_rows("train", "bundled")}
    assert not ({r["question"] for r in rows} & (evaluated | trained))
    assert rows == test[1000:1100]
    with pytest.raises(config.ConfigError, match="only"):
        probe.probe_rows(cfg, n=400)
    with pytest.raises(config.ConfigError, match="overlaps"):
        probe.probe_rows(cfg, offset=10)


def test_arith_probe_rows_are_held_out_from_its_training_and_evaluation_rows():
    """The cpu preset's task: the probe is the arith probe split, disjoint from what the run trains and evaluates on,
    and large enough for the >= 200-question probe."""
    from helpers import tasks

    cfg = config.preset("cpu")
    assert cfg.task == "arith" and cfg.probe_size >= 200
    rows = probe.probe_rows(cfg, cfg.probe_size)
    assert len(rows) == cfg.probe_size
    seen = {r["question"] for r in tasks.train_rows("arith") + tasks.eval_rows("arith")}
    assert not ({r["question"] for r in rows} & seen)
    with pytest.raises(config.ConfigError, match="only"):
        probe.probe_rows(cfg, n=451)


def test_paired_bootstrap_known_cases():
    assert probe.paired_bootstrap([3, 4, 5], [1, 2, 3]) == (2.0, 2.0, 2.0)  # a constant difference has no spread
    d, lo, hi = probe.paired_bootstrap([1, 0] * 50, [0, 1] * 50)
    assert d == 0.0 and lo < 0 < hi
    d, lo, hi = probe.paired_bootstrap([1.0] * 60 + [0.0] * 40, [0.0] * 100)
    assert d == pytest.approx(0.6) and 0.45 < lo < 0.6 < hi < 0.75
    # Pairing matters: the same two samples shuffled against each other give a wide interval, paired a tight one.
    a = [float(i) for i in range(100)]
    b = [x - 0.5 for x in a]
    assert probe.paired_bootstrap(a, b)[1:] == (0.5, 0.5)
    assert probe.paired_bootstrap(a, b, seed=1) == probe.paired_bootstrap(a, b, seed=1)  # seeded
    with pytest.raises(ValueError, match="equal-length"):
        probe.paired_bootstrap([1, 2], [1])
    with pytest.raises(ValueError, match="non-finite"):
        probe.paired_bootstrap([1, float("-inf")], [1, 2])


def test_verdicts_in_both_directions():
    assert probe.verdict(0.01, 0.3) == "up"
    assert probe.verdict(-0.3, -0.01) == "down"
    assert probe.verdict(-0.1, 0.2) == "within noise"
    assert probe.verdict(0.0, 0.2) == "within noise"  # an interval touching 0 is not a change


def test_changes_pairs_by_question_and_refuses_different_questions():
    q = [f"q{i}" for i in range(50)]
    start = frame(q, [False] * 50, [-3.0] * 50)
    after = frame(q, [True] * 30 + [False] * 20, [-2.0] * 25 + [-4.0] * 25)
    tab = probe.changes(after, start).set_index("metric")
    assert tab.loc["format_rate", "delta"] == pytest.approx(0.6) and tab.loc["format_rate", "verdict"] == "up"
    assert tab.loc["gold_answer_logprob", "delta"] == pytest.approx(0.0)
    assert tab.loc["gold_answer_logprob", "verdict"] == "within noise"
    assert tab.loc["strict_accuracy", "verdict"] == "within noise"
    with pytest.raises(ValueError, match="different questions"):
        probe.changes(after, frame(q[::-1], [False] * 50, [-3.0] * 50))


def test_history_and_cache_from_a_run_directory(tmp_path):
    q = ["a", "b"]
    assert probe.history(tmp_path).empty
    for empty in ("", "\n"):  # training ended before any checkpoint was probed (1 step)
        (tmp_path / "probe.csv").write_text(empty)
        assert probe.history(tmp_path).empty
    calls = []

    def compute():
        calls.append(1)
        return frame(q, [False, True], [-3.0, -1.0])

    probe.cached(tmp_path / "probe_start.csv", compute)
    again = probe.cached(tmp_path / "probe_start.csv", compute)  # read back, not recomputed
    assert calls == [1] and list(again["format_ok"]) == [False, True]
    pd.DataFrame([{"step": 10, "format_rate": 0.75, "gold_answer_logprob": -1.5, "seconds": 3.0}]).to_csv(
        tmp_path / "probe.csv", index=False)
    frame(q, [True, True], [-1.0, -1.0]).to_csv(tmp_path / "probe_end.csv", index=False)
    (tmp_path / "train_summary.json").write_text(json.dumps({"steps": 20}))
    hist = probe.history(tmp_path)
    assert list(hist["step"]) == [0, 10, 20]
    assert list(hist["format_rate"]) == [0.5, 0.75, 1.0]
    assert list(hist["gold_answer_logprob"]) == [-2.0, -1.5, -1.0]
    assert "seconds" not in hist


def test_probe_callback_records_at_saves_and_truncates_on_resume(tmp_path, monkeypatch):
    from types import SimpleNamespace

    seen = []

    def fake_run(model, tokenizer, rows, cfg, **kw):
        seen.append(kw["label"])
        return frame(["a", "b"], [True, False], [-1.0, -2.0])

    monkeypatch.setattr(probe, "run", fake_run)
    cb = probe.ProbeCallback(tmp_path / "probe.csv", None, [], config.preset("smoke"), samples_dir=tmp_path / "s")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=3)
    cb.on_train_begin(None, state, None)
    for step in (1, 2, 3):  # step 3 is the last: the end probe covers it
        state.global_step = step
        cb.on_save(None, state, None, model=object())
    got = pd.read_csv(tmp_path / "probe.csv")
    assert list(got["step"]) == [1, 2] and list(got["format_rate"]) == [0.5, 0.5]
    assert seen == ["probe step 1", "probe step 2"] and (tmp_path / "s" / "probe_step0002.csv").exists()
    state.global_step = 1  # resumed from checkpoint 1: the row of step 2 belongs to a lost future
    probe.ProbeCallback(tmp_path / "probe.csv", None, [], config.preset("smoke")).on_train_begin(None, state, None)
    assert list(pd.read_csv(tmp_path / "probe.csv")["step"]) == [1]


def test_probe_size_is_validated():
    with pytest.raises(config.ConfigError, match="probe_size"):
        config.validate(config.preset("smoke", probe_size=-1))
    config.validate(config.preset("smoke", probe_size=0))
    assert config.preset("smoke").probe_size == 4 and config.preset("cpu").probe_size == 400  # >= 200 (arith task)
    config.validate(config.preset("cpu", probe_size=450), gpu_available=False)  # the arith probe split has 450
    with pytest.raises(config.ConfigError, match="450"):
        config.validate(config.preset("cpu", probe_size=451), gpu_available=False)
    with pytest.raises(config.ConfigError, match="300"):
        config.validate(config.preset("cpu", task="gsm8k", probe_size=301), gpu_available=False)
    with pytest.raises(config.ConfigError, match="task"):
        config.validate(config.preset("cpu", task="svamp"), gpu_available=False)


def test_changes_on_another_task_pairs_by_its_key_and_drops_unscored_rows_only_when_asked():
    nan = float("nan")
    cols = {"gain": "improvement_pct", "length": "plan_tokens"}
    start = pd.DataFrame({"id": ["s1", "s2", "s3", "s4"], "improvement_pct": [-5.0, -4.0, nan, -6.0],
                          "plan_tokens": [60, 62, 64, 58]})
    after = pd.DataFrame({"id": ["s1", "s2", "s3", "s4"], "improvement_pct": [-1.0, 0.0, 2.0, -2.0],
                          "plan_tokens": [40, 42, 44, 38]})
    with pytest.raises(ValueError, match="non-finite"):  # by default an unscored row is an error, not skipped
        probe.changes(after, start, columns=cols, key="id")
    tab = probe.changes(after, start, columns=cols, key="id", dropna=True).set_index("metric")
    assert tab.loc["gain", "n"] == 3 and tab.loc["gain", "delta"] == pytest.approx(4.0)  # s3 left unpaired
    assert tab.loc["gain", "start"] == pytest.approx(-5.0) and tab.loc["gain", "verdict"] == "up"
    assert tab.loc["length", "n"] == 4 and tab.loc["length", "delta"] == -20.0 and tab.loc["length", "verdict"] == "down"
    with pytest.raises(ValueError, match="different questions"):
        probe.changes(after, start.iloc[::-1], columns=cols, key="id", dropna=True)
    assert probe.summary(after, cols) == {"gain": pytest.approx(-0.25), "length": 41.0}


def test_probe_callback_with_a_task_probe(tmp_path):
    from types import SimpleNamespace

    cols = {"gain": "improvement_pct"}
    seen = []

    def run_fn(model, rows, label):
        seen.append((model, tuple(rows), label))
        return pd.DataFrame({"id": ["s1", "s2"], "improvement_pct": [1.0, 3.0]})

    cb = probe.ProbeCallback(tmp_path / "probe.csv", None, ["r1"], config.preset("smoke"), run_fn=run_fn,
                             metrics=cols)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=5)
    cb.on_train_begin(None, state, None)
    state.global_step = 2
    cb.on_save(None, state, None, model="policy")
    assert seen == [("policy", ("r1",), "probe step 2")]
    assert pd.read_csv(tmp_path / "probe.csv").drop(columns="seconds").to_dict("records") == [{"step": 2, "gain": 2.0}]
    assert list(probe.history(tmp_path, cols).columns) == ["step", "gain"]
