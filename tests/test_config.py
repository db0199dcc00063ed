import pytest

from helpers import config
from helpers.config import ConfigError, RunConfig


@pytest.mark.parametrize("name", config.PRESETS)
def test_presets_are_valid(name):
    cfg = config.preset(name)
    config.validate(cfg, gpu_available=True)
    assert cfg.preset == name and cfg.generation_batch % cfg.num_generations == 0


def test_cpu_presets_use_the_embedded_model_and_gpu_presets_qwen():
    assert config.preset("cpu").model_name == config.EMBEDDED_MODEL
    assert config.preset("smoke").model_name == config.EMBEDDED_MODEL
    assert config.preset("t4").model_name.startswith("Qwen/Qwen2.5-") and config.preset("t4").precision == "auto"
    assert config.preset("a100").model_name == "Qwen/Qwen2.5-3B-Instruct" and config.preset("a100").precision == "bf16"
    assert config.preset("cpu").sft_steps > 0 and config.preset("t4").sft_steps == 0


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"Unknown preset 'huge'.*smoke"):
        config.preset("huge")


def test_batch_not_divisible_names_both_numbers_and_the_fix():
    cfg = config.preset("cpu", per_device_batch=6, num_generations=4)
    with pytest.raises(ConfigError) as e:
        config.validate(cfg, gpu_available=False)
    msg = str(e.value)
    assert "6" in msg and "num_generations=4" in msg and "per_device_batch=4" in msg


def test_batch_divisibility_counts_processes():
    cfg = config.preset("cpu", per_device_batch=2, num_generations=4)
    with pytest.raises(ConfigError):
        config.validate(cfg, num_processes=1, gpu_available=False)
    config.validate(cfg, num_processes=2, gpu_available=False)


def test_gpu_preset_without_gpu():
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*GRPO_PRESET=cpu"):
        config.validate(config.preset("t4"), gpu_available=False)


def test_completion_longer_than_context():
    cfg = config.preset("cpu", max_completion_length=9000)
    with pytest.raises(ConfigError, match="exceeds .* context of 8192.*at most 7936"):
        config.validate(cfg, gpu_available=False)


@pytest.mark.parametrize("field, value, pattern", [
    ("num_generations", 1, "at least 2"),
    ("loss_type", "ppo", "loss_type"),
    ("dataset_source", "ftp", "dataset_source"),
    ("max_steps", 0, "max_steps"),
    ("temperature", 0.0, "temperature"),
    ("reward_weights", {"correctness_reward": "high"}, "not numbers"),
])
def test_bad_fields(field, value, pattern):
    cfg = config.preset("cpu").override(**{field: value, "per_device_batch": 8})
    with pytest.raises(ConfigError, match=pattern):
        config.validate(cfg, gpu_available=False)


def test_unknown_override_field_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="Unknown config field"):
        config.preset("cpu", learnin_rate=1e-3)


def test_roundtrip_dict():
    cfg = config.preset("t4")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_choose_preset_from_env(monkeypatch):
    monkeypatch.setenv("GRPO_PRESET", "smoke")
    assert config.choose_preset() == "smoke"
    assert config.choose_preset("cpu") == "cpu"  # explicit beats the environment
    monkeypatch.setenv("GRPO_PRESET", "nope")
    with pytest.raises(ConfigError, match="GRPO_PRESET"):
        config.choose_preset()
    monkeypatch.delenv("GRPO_PRESET")
    assert config.choose_preset() == "cpu"  # no GPU here


@pytest.mark.parametrize("field,value,pattern", [
    ("lr_scheduler_type", "wavy", "Unknown lr_scheduler_type"), ("sft_lr_scheduler_type", "x", "sft_lr_scheduler"),
    ("warmup_ratio", 1.0, "warmup_ratio"), ("sft_warmup_ratio", -0.1, "sft_warmup_ratio"),
    ("weight_decay", -1.0, "weight_decay"), ("max_grad_norm", 0.0, "max_grad_norm"),
    ("adam_beta1", 1.0, "adam_beta1"), ("adam_beta2", -0.5, "adam_beta2"),
])
def test_optimizer_fields_are_validated(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config.validate(config.preset("cpu", **{field: value}), gpu_available=False)


def test_grpo_args_take_every_optimizer_setting_from_runconfig(tmp_path):
    from helpers.training import grpo_args

    cfg = config.preset("smoke", lr_scheduler_type="linear", warmup_ratio=0.2, weight_decay=0.01,
                        max_grad_norm=1.0, adam_beta1=0.8, adam_beta2=0.95)
    args = grpo_args(cfg, tmp_path, "hf")
    assert str(args.lr_scheduler_type).split(".")[-1].lower() == "linear"
    assert (args.warmup_ratio, args.weight_decay, args.max_grad_norm, args.adam_beta1, args.adam_beta2) == (
        0.2, 0.01, 1.0, 0.8, 0.95)
