"""The Colab GPU path, checked on CPU: hardware choice (a simulated T4 / L4 / A100), the embedded model's
backend, and the precision checks. torch.cuda is simulated; nothing here needs a GPU."""
from types import SimpleNamespace

import pytest
import torch

from helpers import config, runtime
from helpers.config import ConfigError

GPUS = {  # name: (compute capability, memory in GiB)
    "Tesla T4": ((7, 5), 14.7),
    "NVIDIA L4": ((8, 9), 22.0),
    "NVIDIA A100-SXM4-40GB": ((8, 0), 39.4),
    "NVIDIA A100-SXM4-80GB": ((8, 0), 79.2),
}


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(name):
        cap, gib = GPUS[name]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device=None: SimpleNamespace(name=name, total_memory=int(gib * 2**30)))
        # The trap: since torch 2.4 is_bf16_supported() counts emulation and says True on a T4.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.delenv("GRPO_PRESET", raising=False)
        runtime.reset_hardware_cache()

    yield install
    runtime.reset_hardware_cache()


@pytest.mark.parametrize("gpu, preset, precision", [
    ("Tesla T4", "t4", "fp16"),
    ("NVIDIA L4", "t4", "bf16"),
    ("NVIDIA A100-SXM4-40GB", "a100", "bf16"),
    ("NVIDIA A100-SXM4-80GB", "a100", "bf16"),
])
def test_auto_preset_and_precision_follow_capability_and_memory(fake_gpu, gpu, preset, precision):
    fake_gpu(gpu)
    assert config.choose_preset("auto") == preset
    cfg = config.preset(preset)
    assert runtime.resolve_precision(cfg.precision) == precision
    config.validate(cfg, gpu_available=True)


def test_no_gpu_gives_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("GRPO_PRESET", raising=False)
    runtime.reset_hardware_cache()
    try:
        assert config.choose_preset(None) == "cpu"
        assert runtime.resolve_precision("auto") == "fp32"
    finally:
        runtime.reset_hardware_cache()


def test_bf16_preset_on_a_t4_is_rejected_before_loading(fake_gpu):
    fake_gpu("Tesla T4")
    with pytest.raises(ConfigError, match=r"7\.5\) has no bf16.*t4 preset"):
        config.validate(config.preset("a100"), gpu_available=True)


def test_cli_chooses_the_preset_from_capability_too(fake_gpu, monkeypatch, capsys):
    """helpers.run decides the preset before Unsloth is imported: it must not trust is_bf16_supported()."""
    from helpers import run

    fake_gpu("Tesla T4")
    seen = {}
    monkeypatch.setattr(runtime, "pick_backend", lambda preferred="auto": (_ for _ in ()).throw(SystemExit(0)))
    real_preset = config.preset

    def spy(name, **kw):
        seen["preset"] = name
        return real_preset(name, **kw)

    monkeypatch.setattr(config, "preset", spy)
    with pytest.raises(SystemExit):
        run.main(["--stage", "rule"])
    assert seen["preset"] == "t4"


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_embedded_model_always_runs_on_hf(fake_gpu, name):
    fake_gpu("NVIDIA A100-SXM4-40GB")
    cfg = config.preset(name, backend="auto")
    assert cfg.backend == "hf" and config.backend_request(cfg) == "hf"
    assert runtime.pick_backend(config.backend_request(cfg)) == "hf"
    with pytest.raises(ConfigError, match="embedded SmolLM2 GGUF model runs on the 'hf' backend"):
        config.validate(cfg.override(backend="unsloth"), gpu_available=True)
