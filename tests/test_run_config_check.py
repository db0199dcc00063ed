"""Same run name, different configuration: nothing is reused silently (training.check_run_config)."""
import json

import pytest

from helpers import ablations, config, pipeline, training
from helpers.config import ConfigError


def smoke(**kw):
    return config.preset("smoke", backend="hf", **kw)


def finished_run(run_dir, cfg):
    """A run directory that looks finished (no model needed)."""
    training.check_run_config(run_dir, cfg)
    (run_dir / "final_lora").mkdir(parents=True)
    (run_dir / "final_lora" / "adapter_model.safetensors").write_bytes(b"x")
    (run_dir / "train_summary.json").write_text('{"steps": 2}')
    (run_dir / "eval_samples_after.csv").write_text("completion\nx\n")
    return run_dir


def test_new_then_same(tmp_path):
    cfg = smoke()
    assert training.check_run_config(tmp_path / "r", cfg) == "new"
    saved = (tmp_path / "r" / "config.json").read_text()
    assert json.loads(saved) == cfg.to_dict()
    assert training.check_run_config(tmp_path / "r", cfg) == "same"
    # bookkeeping fields do not count, and the saved config.json is left as it was
    assert training.check_run_config(tmp_path / "r", cfg.override(eval_batch_size=1, report_to="tensorboard",
                                                                   self_check=False, logging_steps=3)) == "same"
    assert (tmp_path / "r" / "config.json").read_text() == saved


def test_changed_config_stops_and_leaves_config_json(tmp_path):
    cfg = smoke()
    run = finished_run(tmp_path / "r", cfg)
    saved = (run / "config.json").read_text()
    weights = {**cfg.reward_weights, "correctness_reward": 0.0}
    with pytest.raises(ConfigError) as err:
        training.check_run_config(run, cfg.override(reward_weights=weights, max_steps=5))
    msg = str(err.value)
    assert "reward_weights" in msg and "max_steps: 2 -> 5" in msg, msg
    assert "RUN_NAME" in msg and "OVERWRITE=True" in msg and "--overwrite" in msg
    assert (run / "config.json").read_text() == saved
    # train_grpo stops the same way, before loading the old adapter (no model is needed to get there)
    with pytest.raises(ConfigError):
        training.train_grpo(cfg.override(max_steps=5), None, None, [], None, run)
    assert (run / "config.json").read_text() == saved and training.is_finished(run)


def test_overwrite_deletes_results_and_writes_new_config(tmp_path):
    cfg = smoke()
    run = finished_run(tmp_path / "r", cfg)
    new = cfg.override(max_steps=5)
    assert training.check_run_config(run, new, overwrite=True) == "overwritten"
    assert not training.is_finished(run) and not (run / "eval_samples_after.csv").exists()
    assert json.loads((run / "config.json").read_text())["max_steps"] == 5
    assert training.check_run_config(run, new) == "same"


def test_field_added_later_counts_as_its_default(tmp_path):
    cfg = smoke()
    run = tmp_path / "r"
    run.mkdir()
    old = cfg.to_dict()
    del old["max_target_tokens"]  # a config.json written before this field existed
    old["field_removed_since"] = 1
    (run / "config.json").write_text(json.dumps(old))
    assert training.check_run_config(run, cfg) == "same"
    with pytest.raises(ConfigError, match="max_target_tokens"):
        training.check_run_config(run, cfg.override(max_target_tokens=7))


def test_experiment_stops_before_loading_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    cfg = smoke(run_name="exp")
    finished_run(tmp_path / "exp", cfg)
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(ConfigError, match="learning_rate"):
        pipeline.Experiment(cfg.override(learning_rate=1e-3), backend="hf")


def test_grid_variants_do_not_trip_each_other(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    base = ablations.base_config("smoke", backend="hf")
    variants = ablations.validate_variants(ablations.GRIDS["smoke"], base)
    assert len(variants) >= 2
    grid = tmp_path / base.run_name
    grid.mkdir(parents=True)
    for _ in range(2):  # first run writes each variant's config.json, the second finds each one unchanged
        for v in variants:
            training.check_run_config(grid / v["name"], ablations.variant_config(base, v))
    (grid / "grid.json").write_text(json.dumps({"base": base.to_dict()}))
    ablations.runner._check_grid_config(grid, base, overwrite=False)
    with pytest.raises(ConfigError, match="sft_steps"):
        ablations.runner._check_grid_config(grid, base.override(sft_steps=base.sft_steps + 1), overwrite=False)
    ablations.runner._check_grid_config(grid, base.override(sft_steps=base.sft_steps + 1), overwrite=True)
    assert not any(grid.iterdir())
