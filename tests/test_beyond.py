"""Notebook 05's driver (helpers/beyond/), its knobs and CLI stages: fast, no model (fakes where needed)."""
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import beyond, config, dynamics, pipeline, run, training
from helpers.config import ConfigError


# ---- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize("name", config.PRESETS)
def test_beyond_presets_are_valid_and_other_notebooks_keep_the_defaults(name):
    cfg = beyond.beyond_config(name)
    config.validate(cfg, gpu_available=True)
    assert cfg.run_name == "05_beyond"
    for field, value in beyond.BEYOND_OVERRIDES[name].items():
        assert getattr(cfg, field) == value
    plain = config.preset(name)
    defaults = config.RunConfig()
    assert all(getattr(plain, f) == getattr(defaults, f) for f in config.BEYOND_FIELDS)


def test_smoke_values_are_tiny():
    cfg = beyond.beyond_config("smoke")
    assert cfg.rerank_samples == 2 and cfg.rerank_questions <= cfg.probe_size <= 4
    assert cfg.llh_subset_size == 2 * cfg.sft_batch  # 2 steps: the first has lr 0 (warmup)
    assert cfg.error_set_rows <= 2 and cfg.llh_pool_size <= 8


@pytest.mark.parametrize("changes,pattern", [
    (dict(llh_subset_size=3), "multiple of sft_batch"),
    (dict(llh_subset_size=6, llh_pool_size=8), "twice"),
    (dict(rerank_samples=1), "N must be 2"),
    (dict(error_set_rows=0), "at least 1"),
    (dict(error_set_rows=151), "at most 150"),
    (dict(llh_pool_size=1001, llh_subset_size=2), "at most 1000"),
    (dict(llh_dynamics_every=1.5), "whole number"),
])
def test_bad_knobs_are_clear_config_errors(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config.validate(config.preset("smoke", **changes), gpu_available=False)


@pytest.mark.parametrize("changes,pattern", [
    (dict(rerank_questions=5), "exceeds probe_size"), (dict(probe_size=0), "probe_size must be at least 1"),
])
def test_notebook_05_specific_checks(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        beyond.beyond_config("smoke", **changes)
    assert beyond.beyond_config("smoke", sft_steps=0).sft_steps == 0  # no cold start: the start is the base (t4/a100)


def test_grpo_config_is_notebook_01_02s_run():
    cfg = beyond.beyond_config("cpu", max_steps=7)
    rule = beyond.grpo_config(cfg, "rule", "01_rule_based")
    lp = beyond.grpo_config(cfg, "logprob", "02_logprob")
    assert rule.run_name == "01_rule_based" and rule.max_steps == 7
    assert cfg.task == rule.task == "arith" and cfg.probe_size < rule.probe_size  # 05 probes the first of 01/02's
    assert rule.probe_size == config.preset("cpu").probe_size  # the 01/02 runs' own probe, not 05's
    assert all(getattr(rule, f) == getattr(config.RunConfig(), f) for f in config.BEYOND_FIELDS)
    assert set(rule.reward_weights.values()) == {1.0}
    assert lp.reward_weights == pipeline.logprob_weights("mean")
    # the same config notebook 01 writes on cpu (up to the run name and the weights it sets)
    assert training.config_differences(config.preset("cpu", max_steps=7).to_dict(), rule) == {}


def test_question_exposures():
    cfg = config.preset("cpu")
    assert beyond.question_exposures(cfg) == 50 * 2 and beyond.question_exposures(cfg, 2) == 200  # 2 questions x G=8
    assert beyond.question_exposures(beyond.beyond_config("cpu")) == 50 * 2  # 05 pairs with 01/02: the same budget
    assert beyond.question_exposures(config.preset("a100")) == 1000 * 2


def test_pool_rows_are_the_tail_and_never_the_grpo_rows():
    rows = [{"i": i} for i in range(20)]
    assert beyond.pool_rows(rows, rows[:5], 4) == rows[-4:]
    assert beyond.pool_rows(rows, rows[:5], 15) == rows[5:]
    with pytest.raises(ValueError, match="GRPO training rows"):
        beyond.pool_rows(rows, rows[:5], 16)


# ---- tables ------------------------------------------------------------------------------
def probe_frame(correct, n=None):
    n = n or len(correct)
    return pd.DataFrame({"question": [f"q{i}" for i in range(n)], "completion": [f"c{c}" for c in correct[:n]],
                         "format_ok": [1] * n, "strict_correct": correct[:n], "lenient_correct": correct[:n],
                         "gold_answer_logprob": [-1.0] * n, "gold_logprob": [-2.0] * n})


def test_paired_table_compares_each_arm_with_its_start_and_the_pairs_on_shared_questions():
    start = probe_frame([0, 0, 0, 0, 0, 0])
    ends = {"a": probe_frame([1, 1, 1, 1, 1, 1]), "b": probe_frame([0, 1, 0, 1], 4)}
    table = beyond.paired_table(ends, {"a": start, "b": start}, pairs=[("a", "b")])
    assert list(table.columns[:2]) == ["comparison", "metric"]
    acc = table[table["metric"] == "strict_accuracy"].set_index("comparison")
    assert acc.loc["a vs start", "delta"] == 1.0 and acc.loc["a vs start", "verdict"] == "up"
    assert acc.loc["b vs start", "delta"] == 0.5
    assert acc.loc["a vs b", "delta"] == 0.5  # on the 4 questions b was probed on
    fmt = table[table["metric"] == "format_rate"]
    assert (fmt["delta"] == 0).all() and (fmt["verdict"] == "within noise").all()
    assert beyond.agreement(start, ends["b"]) == 0.5 and beyond.agreement(start, start.drop(columns="completion")) is None


def test_slm_records_from_a_dynamics_csv(tmp_path):
    path = tmp_path / "dynamics.csv"
    csv = training.MetricsCSV(path)
    csv.append({"step": 2, "high/loglik": -3.0, "high/ppl": 2.0, "high/entropy": 1.0, "high/tokens": 5, "seconds": 1})
    csv.append({"step": 0, "high/loglik": -4.0, "high/ppl": 3.0, "high/entropy": 1.2, "high/tokens": 5, "seconds": 1})
    steps, recs = beyond.slm_records(path)
    assert steps == [0, 2] and recs[0] == {"high": {"loglik": -4.0, "ppl": 3.0, "entropy": 1.2, "tokens": 5.0}}
    js = beyond.sft_select.slm_json(steps, recs)
    assert js["results_by_type"]["high"]["avg_log_likelihood"] == [-4.0, -3.0]


def test_localisation_table_accuracy_baselines_and_variants():
    examples = [{"variant": v, "first_wrong": 1, "num_steps": 4} for v in ("propagate", "no_propagate")] * 2
    scores = [{"implicit": [0, -5, 0, 0], "logprob_drop": [0, 0, 0, -1], "trace": None}] * 4
    t = beyond.localisation_table(examples, scores).set_index(["score", "variant"])
    assert t.loc[("implicit", "all"), "accuracy"] == 1.0 and t.loc[("logprob_drop", "all"), "accuracy"] == 0.0
    assert t.loc[("trace", "all"), "scored"] == 0 and t.loc[("trace", "all"), "accuracy"] == 0.0
    assert t.loc[("implicit", "propagate"), "examples"] == 2
    assert t.loc[("implicit", "all"), "random_step"] == 0.25 and t.loc[("implicit", "all"), "last_step"] == 0.0
    assert t.loc[("implicit", "all"), "minus_random"] == 0.75 and t.loc[("implicit", "all"), "verdict"] == "up"


# ---- building blocks changed for notebook 05 ---------------------------------------------
def test_fitting_rows_keeps_short_solutions_else_all(char_tok):
    cfg = config.preset("smoke", max_completion_length=100)
    rows = [{"question": "q", "answer": "a\n#### 1"}, {"question": "q", "answer": "x" * 200 + "\n#### 2"}]
    assert training.fitting_rows(cfg, char_tok, rows) == rows[:1]
    assert training.fitting_rows(cfg, char_tok, rows[1:]) == rows[1:]  # none fits: all of them


def test_dynamics_callback_every_records_step_0_each_k_and_the_last(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    calls = []
    monkeypatch.setattr(dynamics, "dynamics_stats", lambda model, tok, pool, batch_size=4, names=():
                        calls.append(tuple(names)) or {"a/loglik": -1.0, "a/tokens": 3.0})
    cb = dynamics.DynamicsCallback(tmp_path / "d.csv", None, [], every=2, names=("loglik", "tokens"))
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=5)
    model = SimpleNamespace(parameters=lambda: [])
    cb.on_train_begin(None, state, None, model=model)
    for step in range(1, 6):
        state.global_step = step
        cb.on_step_end(None, state, None, model=model)
        cb.on_save(None, state, None, model=model)  # ignored with `every`
    assert [int(r["step"]) for r in training.MetricsCSV(tmp_path / "d.csv").rows] == [0, 2, 4, 5]
    assert set(calls) == {("loglik", "tokens")}
    assert dynamics.unflatten({"step": 1, "a/loglik": "-1.5", "b/c/ppl": 2}) == {"a": {"loglik": -1.5},
                                                                                 "b/c": {"ppl": 2.0}}


def test_baseline_results_checks_the_stage_and_says_what_to_run_on_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    cfg = config.preset("smoke")
    with pytest.raises(ValueError, match="'rule' or 'logprob'"):
        pipeline.baseline_results(cfg, "x", "hf", stage="writing")
    with pytest.raises(RuntimeError, match="run notebook 02 first"):
        pipeline.baseline_results(cfg, "02_logprob", "unsloth", stage="logprob", probes=True)
    # a finished run without its probe: on GPU the message names the probe files
    rd = tmp_path / "01_rule_based"
    (rd / "final_lora").mkdir(parents=True)
    (rd / "final_lora" / "adapter_model.safetensors").write_bytes(b"")
    (rd / "train_summary.json").write_text("{}")
    (rd / "config.json").write_text(json.dumps(cfg.to_dict()))
    pd.DataFrame([{"model": "after"}]).to_csv(rd / "eval_table.csv", index=False)
    assert pipeline.baseline_results(cfg, "01_rule_based", "unsloth")["run_dir"] == rd
    with pytest.raises(RuntimeError, match="probe_start.csv"):
        pipeline.baseline_results(cfg, "01_rule_based", "unsloth", probes=True)


# ---- CLI ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,pattern", [
    (["--stage", "rerank", "--preset", "smoke", "--set", "rerank_samples=1"], "N must be 2"),
    (["--stage", "llh_select", "--preset", "smoke", "--set", "llh_subset_size=3"], "multiple of sft_batch"),
    (["--stage", "first_error", "--preset", "smoke", "--set", "probe_size=0"], "probe_size must be at least 1"),
    (["--stage", "sft_vs_grpo", "--preset", "smoke", "--set", "rerank_questions=9"], "exceeds probe_size"),
    (["--stage", "rule", "--preset", "smoke", "--set", "rule_run=x"], "notebook 05's stages only"),
    (["--stage", "rerank", "--preset", "smoke", "--set", "no_such_field=1"], "Unknown config field"),
])
def test_cli_rejects_bad_notebook_05_settings_before_loading(argv, pattern, capsys, monkeypatch):
    monkeypatch.setattr(beyond, "run_part", lambda *a, **k: pytest.fail("a model would load"))
    assert run.main(argv) == 2
    assert pattern in capsys.readouterr().err


def test_cli_lists_the_notebook_05_stages(capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    out = capsys.readouterr().out
    assert all(stage in out for stage in run.BEYOND_STAGES) and set(run.BEYOND_STAGES) == set(beyond.PARTS)


def test_cli_passes_the_config_and_run_names_to_the_part(monkeypatch, tmp_path):
    seen = {}

    class Fake:
        is_main = False

    def fake_run_part(cfg, part, **kw):
        seen.update(cfg=cfg, part=part, **kw)
        return Fake(), {}

    monkeypatch.setattr(beyond, "run_part", fake_run_part)
    monkeypatch.setattr(run.runtime, "banner", lambda *a, **k: "")
    assert run.main(["--stage", "rerank", "--preset", "smoke", "--run-name", "mine", "--set", "rerank_samples=3",
                     "--set", "rule_run=r1", "--overwrite"]) == 0
    assert seen["part"] == "rerank" and seen["cfg"].run_name == "mine" and seen["cfg"].rerank_samples == 3
    assert seen["rule_run"] == "r1" and seen["overwrite"] is True and seen["backend"] == "hf"


def test_step_scores_survive_the_json_round_trip(tmp_path):
    from helpers.runtime import atomic_write_json

    path = tmp_path / "scores.json"
    atomic_write_json(path, [{"implicit": [0.0, float("nan"), -2.0], "logprob_drop": None, "trace": [1, 2, 3]}])
    (row,) = beyond.load_step_scores(path)
    assert row["logprob_drop"] is None and row["trace"] == [1.0, 2.0, 3.0]
    assert beyond.steps.predict_first_wrong(row["implicit"]) == 2


def test_notebook_05_machinery_lives_in_one_package_and_old_names_still_import():
    import importlib

    import helpers.beyond
    from helpers.beyond import sft_select as moved_select
    from helpers.beyond import steps as moved_steps

    assert importlib.import_module("helpers.steps") is moved_steps
    assert importlib.import_module("helpers.sft_select") is moved_select
    from helpers import sft_select, steps  # the names notebooks and users have used

    assert steps.inject_error is moved_steps.inject_error and sft_select is moved_select
    assert hasattr(helpers.beyond, "BeyondExperiment") and hasattr(helpers.beyond, "BEYOND_OVERRIDES")
