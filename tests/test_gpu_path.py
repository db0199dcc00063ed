"""The Colab GPU path, checked on CPU: hardware choice (a simulated T4 / L4 / A100), the embedded model's
backend, and the precision checks. torch.cuda is simulated; nothing here needs a GPU. The CPU's bf16 matrix units
(AMX / AVX512-BF16, read from /proc/cpuinfo) are simulated the same way (`fake_cpu`)."""
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
    def install(name, unsloth=True):  # unsloth=False: Colab's default runtime (Python 3.13), where it cannot install
        cap, gib = GPUS[name]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device=None: SimpleNamespace(name=name, total_memory=int(gib * 2**30)))
        # The trap: since torch 2.4 is_bf16_supported() counts emulation and says True on a T4.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(runtime, "unsloth_installed", lambda: unsloth)
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


@pytest.mark.parametrize("gpu, precision", [("Tesla T4", "fp16"), ("NVIDIA L4", "bf16"),
                                            ("NVIDIA A100-SXM4-80GB", "bf16")])
def test_a_gpu_without_unsloth_gets_the_hf_preset_and_backend(fake_gpu, gpu, precision, capsys):
    """Colab's default runtime: no Unsloth, so PRESET="auto" picks gpu-hf (sized for transformers' generate) and
    BACKEND="auto" picks hf without trying the import."""
    fake_gpu(gpu, unsloth=False)
    assert config.choose_preset("auto") == "gpu-hf"
    cfg = config.preset("gpu-hf")
    assert cfg.model_name == "Qwen/Qwen2.5-0.5B-Instruct" and not cfg.load_in_4bit
    assert runtime.resolve_precision(cfg.precision) == precision
    config.validate(cfg, gpu_available=True)
    assert runtime.pick_backend(cfg.backend) == "hf"
    assert "Unsloth is not installed" in capsys.readouterr().out


def test_no_gpu_gives_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("GRPO_PRESET", raising=False)
    runtime.reset_hardware_cache()
    try:
        assert config.choose_preset(None) == "cpu"
        assert runtime.resolve_precision("auto") == "fp32"
    finally:
        runtime.reset_hardware_cache()


# ---------------------------------------------------------------------------------------
# CPU bf16 matrix units: /proc/cpuinfo simulated by a file, torch.cuda absent.
SAPPHIRE_RAPIDS = "fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8"
COOPER_LAKE = "fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
ICE_LAKE = "fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni"  # AVX-512 without bf16: emulated
LAPTOP = "fpu sse2 avx2 fma"


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    def install(flags, system="Linux", torch_bf16=True, cpuinfo=None):
        path = tmp_path / "cpuinfo"
        if cpuinfo is not None:
            path.write_text(cpuinfo)
        elif flags is not None:
            path.write_text("".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\n"
                                    for i in range(2)))
        monkeypatch.setattr(runtime, "CPUINFO", path)  # no file written: unreadable
        monkeypatch.setattr(runtime.platform, "system", lambda: system)
        monkeypatch.setattr(runtime, "_torch_cpu_bf16", lambda: torch_bf16)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)  # the test session sets it to 0
        monkeypatch.delenv("GRPO_PRESET", raising=False)
        runtime.reset_hardware_cache()

    yield install
    runtime.reset_hardware_cache()


@pytest.mark.parametrize("flags, system, torch_bf16, units, precision", [
    (SAPPHIRE_RAPIDS, "Linux", True, ("amx_bf16", "avx512_bf16"), "bf16"),
    (COOPER_LAKE, "Linux", True, ("avx512_bf16",), "bf16"),
    (ICE_LAKE, "Linux", True, (), "fp32"),
    (LAPTOP, "Linux", True, (), "fp32"),
    (SAPPHIRE_RAPIDS, "Linux", False, ("amx_bf16", "avx512_bf16"), "fp32"),  # torch without oneDNN bf16
    (SAPPHIRE_RAPIDS, "Darwin", True, (), "fp32"),  # cannot tell: never assumed
    (SAPPHIRE_RAPIDS, "Windows", True, (), "fp32"),
    (None, "Linux", True, (), "fp32"),  # /proc/cpuinfo unreadable
])
def test_cpu_precision_follows_the_bf16_units(fake_cpu, flags, system, torch_bf16, units, precision):
    fake_cpu(flags, system, torch_bf16)
    assert runtime.cpu_bf16_units() == units
    assert runtime.cpu_bf16_matmul() == (precision == "bf16")
    assert runtime.resolve_precision("auto") == precision
    assert config.choose_preset(None) == "cpu"
    for explicit in ("fp32", "bf16", "fp16"):  # an explicit precision is never second-guessed
        assert runtime.resolve_precision(explicit) == explicit


def test_arm_cpuinfo_stays_fp32(fake_cpu):
    """An arm64 /proc/cpuinfo lists `Features` (with bf16 on Graviton3 / Neoverse V1), not x86 `flags`."""
    fake_cpu(None, cpuinfo="processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n")
    assert runtime.cpu_flags() is None and runtime.resolve_precision("auto") == "fp32"


def test_cpu_bf16_env_overrides_detection(fake_cpu, monkeypatch):
    fake_cpu(SAPPHIRE_RAPIDS)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    assert runtime.resolve_precision("auto") == "fp32" and runtime.cpu_bf16_units() == ("amx_bf16", "avx512_bf16")
    fake_cpu(LAPTOP)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert runtime.resolve_precision("auto") == "bf16"


def test_detection_is_cached_until_reset(fake_cpu, monkeypatch):
    fake_cpu(SAPPHIRE_RAPIDS)
    assert runtime.cpu_bf16_matmul()
    runtime.CPUINFO.write_text(f"flags\t: {LAPTOP}\n")
    assert runtime.cpu_bf16_matmul()  # cached: /proc/cpuinfo is read once
    runtime.reset_hardware_cache()
    assert not runtime.cpu_bf16_matmul()


def test_a_gpu_decides_precision_whatever_the_cpu(fake_cpu, fake_gpu):
    fake_cpu(SAPPHIRE_RAPIDS)
    fake_gpu("Tesla T4")
    assert runtime.resolve_precision("auto") == "fp16"


def test_the_real_cpu_is_read_without_error(monkeypatch):
    """Whatever this machine is, detection answers with a bool and the units it found (no exception)."""
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    runtime.reset_hardware_cache()
    try:
        units = runtime.cpu_bf16_units()
        assert set(units) <= set(runtime.CPU_BF16_FLAGS)
        assert isinstance(runtime.cpu_bf16_matmul(), bool) and (runtime.cpu_bf16_matmul() <= bool(units))
    finally:
        runtime.reset_hardware_cache()


def test_trainer_flags_autocast_on_a_gpu_but_not_on_a_cpu(fake_cpu, fake_gpu, capsys, tmp_path):
    """CPU bf16: the weights carry the precision, no torch.cpu.amp autocast (which would run the fp32 LoRA in bf16)."""
    fake_cpu(SAPPHIRE_RAPIDS)
    assert training.amp_flags("bf16") == {"bf16": False, "fp16": False}
    assert training.amp_flags("fp32") == {"bf16": False, "fp16": False}
    args = training.grpo_args(config.preset("cpu"), tmp_path, "hf")  # auto -> bf16 here
    assert args.bf16 is False and args.fp16 is False
    assert "noise floor" not in capsys.readouterr().out  # the cpu preset has no KL term (beta 0)
    training.grpo_args(config.preset("smoke"), tmp_path, "hf")  # beta 0.04 in bf16 on CPU
    assert "KL term (beta=0.04) is then mostly noise" in capsys.readouterr().out
    fake_gpu("NVIDIA A100-SXM4-40GB")
    assert training.amp_flags("bf16") == {"bf16": True, "fp16": False}
    fake_gpu("Tesla T4")
    assert training.amp_flags("fp16") == {"bf16": False, "fp16": True}


def test_16_bit_on_a_cpu_loads_eager_attention(fake_cpu, fake_gpu):
    """torch's CPU sdpa in bf16 gives length-dependent scores (fails the self-check's causality test)."""
    fake_cpu(SAPPHIRE_RAPIDS)
    assert training.attn_implementation(torch.bfloat16) == "eager"
    assert training.attn_implementation(torch.float16) == "eager"
    assert training.attn_implementation(torch.float32) is None  # transformers' default (sdpa)
    fake_gpu("NVIDIA A100-SXM4-40GB")
    assert training.attn_implementation(torch.bfloat16) is None


def test_banner_names_the_cpu_bf16_units(fake_cpu, capsys):
    fake_cpu(COOPER_LAKE)
    assert "CPU bf16 units: avx512_bf16, bf16=True" in runtime.banner()
    assert "fp32" not in runtime.banner()  # no slowdown note where bf16 is used
    fake_cpu(LAPTOP)
    text = runtime.banner()
    assert "CPU bf16 units: none found, bf16=False" in text
    assert "runs in fp32" in text and "x as long here" in text  # the user learns what the missing units cost


def test_figure_labels_say_the_weights_precision_and_the_cpu_units(fake_cpu):
    """A figure from a bf16 run must not say fp32 (the label once hard-coded it), and names the bf16 units."""
    from helpers import plots

    fake_cpu(SAPPHIRE_RAPIDS)
    label = plots.run_label(config.EMBEDDED_MODEL, "40 SFT + 25 GRPO", precision="auto")
    assert "dequantized to bf16" in label and "amx_bf16 + avx512_bf16" in label and "fp32" not in label
    assert "dequantized to fp32" in plots.run_label(config.EMBEDDED_MODEL, 25, precision="fp32")  # notebooks 03-05
    fake_cpu(LAPTOP)
    label = plots.run_label(config.EMBEDDED_MODEL, 25)
    assert "dequantized to fp32" in label and label.endswith(f"cores, {plots.platform.machine()})")
    assert plots.model_label("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen2.5-1.5B-Instruct"
    cfg = config.preset("cpu", precision="fp32")
    assert "dequantized to fp32" in plots.run_label(cfg.model_name, 1, precision=cfg.precision)


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


# ---------------------------------------------------------------------------------------
# The scorer on an Unsloth-patched model, emulated on CPU.
# unsloth 2025.6.12 replaces LlamaModel/Qwen2Model.forward with LlamaModel_fast_forward, which (read from the
# wheel, unsloth/models/llama.py; pinned by tests/test_colab_contract.py):
#   - reads past_key_values[0][0] whenever a cache is passed (an empty DynamicCache raises KeyError),
#   - ignores position_ids (its RoPE takes positions 0..n-1 of the current input),
#   - attends both ways unless the top-level CausalLM_fast_forward passes a causal mask,
# and the top-level forward returns hidden states in `.logits` when UNSLOTH_RETURN_HIDDEN_STATES=1.
import os

from transformers import LlamaForCausalLM, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from helpers import logprob, training


def _fake_body_forward(self, input_ids=None, causal_mask=None, attention_mask=None, position_ids=None,
                       past_key_values=None, use_cache=None, **kwargs):
    if past_key_values is not None:
        past_key_values[0][0]  # noqa: B018 - what LlamaModel_fast_forward does (llama.py, ~693)
    b, n = input_ids.shape
    if causal_mask is None:  # no causal mask from the caller: every position sees every other one
        keep = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        full = torch.zeros(b, 1, n, n).masked_fill(keep[:, None, None, :] == 0, torch.finfo(torch.float32).min)
        return LlamaModel.forward(self, input_ids=input_ids, attention_mask=full, use_cache=False)
    return LlamaModel.forward(self, input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def _fake_causal_lm_forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None,
                            **kwargs):
    out = self.model(input_ids=input_ids, causal_mask=True, attention_mask=attention_mask,
                     past_key_values=past_key_values)
    hidden = out[0]
    if os.environ.get("UNSLOTH_RETURN_HIDDEN_STATES", "0") == "1":
        return CausalLMOutputWithPast(logits=hidden)
    return CausalLMOutputWithPast(logits=self.lm_head(hidden))


_fake_body_forward.__module__ = _fake_causal_lm_forward.__module__ = "unsloth.models.llama"


class FakeUnslothModel(LlamaModel):
    forward = _fake_body_forward


class FakeUnslothForCausalLM(LlamaForCausalLM):
    forward = _fake_causal_lm_forward

    def __init__(self, config):
        super().__init__(config)
        self.model = FakeUnslothModel(config)


@pytest.fixture(scope="module")
def base_and_fake():
    base, tok = training.load_embedded_base()
    fake = FakeUnslothForCausalLM(base.config)
    fake.load_state_dict(base.state_dict())
    return base.eval(), fake.eval(), tok


@pytest.fixture(scope="module")
def pairs(base_and_fake):
    from helpers import data

    _, _, tok = base_and_fake
    rows = data.load_gsm8k_rows("train", "bundled", n=4)
    prompt = logprob.prompt_text(tok, data.make_prompt(rows[0]["question"]))
    triples = [logprob.gold_context_target(prompt, data.format_solution(r["answer"])[:200], "72") for r in rows]
    return [c for c, _, _ in triples], [t for _, t, _ in triples]


def test_fake_is_detected_and_really_attends_both_ways(base_and_fake, pairs):
    base, fake, tok = base_and_fake
    assert logprob.is_unsloth_model(fake) and not logprob.is_unsloth_model(base)
    ids, first = logprob.encode_pair(tok, pairs[0][0], pairs[1][0])
    x = torch.tensor([ids])
    with torch.no_grad():  # the emulation is faithful: the body alone is not causal, the top level is
        body_alone = fake.lm_head(fake.model(input_ids=x, attention_mask=torch.ones_like(x))[0])
        top = fake(input_ids=x, attention_mask=torch.ones_like(x)).logits
        true = base(input_ids=x).logits
    assert (body_alone - true).abs().max() > 1e-2 and (top - true).abs().max() < 1e-4


@pytest.mark.parametrize("share_prefix", [False, True])
def test_scorer_on_unsloth_model_is_causal_and_exact(base_and_fake, pairs, share_prefix):
    base, fake, tok = base_and_fake
    contexts, targets = pairs
    want = logprob.score_targets(base, tok, contexts, targets, batch_size=2)
    got = logprob.score_targets(fake, tok, contexts, targets, batch_size=2, share_prefix=share_prefix,
                                groups=["p"] * len(contexts))
    for a, b in zip(got, want):
        assert a == pytest.approx(b, abs=1e-4)
    assert "UNSLOTH_RETURN_HIDDEN_STATES" not in os.environ, "the variable is scoped to the scorer's forward"


def test_unsloth_max_seq_length_caps_the_scored_sequence(base_and_fake):
    base, fake, tok = base_and_fake
    context, target = "word " * 200, "the end"
    fake.max_seq_length = 48
    try:
        assert logprob.max_scoring_length(fake) == 48
        got = logprob.score_targets(fake, tok, [context], [target])[0]
    finally:
        del fake.max_seq_length
    assert got == pytest.approx(logprob.score_targets(base, tok, [context], [target], max_length=48)[0], abs=1e-4)


def test_reward_on_unsloth_model_does_not_crash_and_matches_hf(base_and_fake, pairs):
    base, fake, tok = base_and_fake
    from helpers import data

    q = data.load_gsm8k_rows("train", "bundled", n=1)[0]
    prompts = [data.make_prompt(q["question"])] * 3
    comps = ["<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>", "no tags at all 7", ""]
    want = logprob.logprob_reward(base, tok, "mean")(prompts=prompts, completions=comps, answer=["7"] * 3)
    got = logprob.logprob_reward(fake, tok, "mean")(prompts=prompts, completions=comps, answer=["7"] * 3)
    assert got == pytest.approx(want, abs=1e-4)


def test_scorer_failure_raises_instead_of_paying_the_floor(base_and_fake, pairs, monkeypatch):
    base, _, tok = base_and_fake
    contexts, targets = pairs

    def broken(*a, **k):
        raise KeyError(0)  # e.g. Unsloth's fast forward reading past_key_values[0][0] of an empty cache

    monkeypatch.setattr(logprob, "_score_batch", broken)
    reward = logprob.logprob_reward(base, tok, "sum")
    with pytest.raises(logprob.ScorerError, match="BACKEND='hf'"):
        reward(prompts=[contexts[0]] * 2, completions=["<answer>", "x"], answer=["1", "2"])


def test_unscorable_inputs_still_get_the_floor(base_and_fake):
    base, _, tok = base_and_fake
    out = logprob.score_or_none(base, tok, ["a context", "another"], ["", "word " * 50], 2, 16, False,
                              logprob.nullcontext)
    assert out == [None, None]


# ---------------------------------------------------------------------------------------
# The start-up self-check
from helpers import selfcheck


def test_self_check_passes_on_hf_and_on_the_unsloth_emulation(base_and_fake):
    base, fake, tok = base_and_fake
    for model in (base, fake):
        out = selfcheck.check_scorer(model, tok)
        assert out["scorer_max_abs_diff"] < 1e-3 and out["causal_leak"] < 1e-3


def test_self_check_fails_on_a_bidirectional_scorer(base_and_fake, monkeypatch):
    """Today's bug, re-created: the scorer calls Unsloth's decoder body directly (no causal mask)."""
    _, fake, tok = base_and_fake
    monkeypatch.setattr(logprob, "is_unsloth_model", lambda model: False)
    with pytest.raises(selfcheck.SelfCheckError, match=r"disagrees with the model's own causal forward.*BACKEND='hf'"):
        selfcheck.check_scorer(fake, tok)


def test_self_check_fails_on_an_offset_scorer(base_and_fake, monkeypatch):
    base, _, tok = base_and_fake
    real = logprob.target_logprobs
    monkeypatch.setattr(logprob, "target_logprobs", lambda *a: real(*a) - 0.5)
    with pytest.raises(selfcheck.SelfCheckError, match="0.5"):
        selfcheck.check_scorer(base, tok)


def test_precision_check(base_and_fake, fake_gpu):
    base, _, _ = base_and_fake
    fake_gpu("Tesla T4")
    with pytest.raises(selfcheck.SelfCheckError, match="no bf16"):
        selfcheck.check_precision(base, "bf16")
    fake_gpu("NVIDIA A100-SXM4-40GB")
    with pytest.raises(selfcheck.SelfCheckError, match="asked for bf16 but the model's output layer is torch.float32"):
        selfcheck.check_precision(base, "bf16")


def test_precision_check_on_cpu(base_and_fake):
    base, _, _ = base_and_fake
    assert selfcheck.check_precision(base, "fp32")["weights"] == "float32"


def test_precision_check_on_a_bf16_cpu(fake_cpu, capsys):
    from transformers import LlamaConfig

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1)).to(torch.bfloat16)
    fake_cpu(SAPPHIRE_RAPIDS)
    assert selfcheck.check_precision(tiny, "bf16") == {"precision": "bf16", "weights": "bfloat16", "gpu": "none"}
    with pytest.raises(selfcheck.SelfCheckError, match="asked for fp32 but the model's output layer is torch.bfloat16"):
        selfcheck.check_precision(tiny, "fp32")
    fake_cpu(ICE_LAKE)  # bf16 asked for explicitly without the units: allowed, noted
    assert "emulated" in selfcheck.check_precision(tiny, "bf16")["note"]
    assert "[self-check] note" in capsys.readouterr().out


def test_adapter_check_on_hf(monkeypatch):
    from helpers import config

    model, tok = training.load_model(config.preset("smoke"), "hf")
    assert selfcheck.check_adapter(model, tok, "hf")["adapter_check"].startswith("skipped")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    assert selfcheck.check_adapter(model, tok, "hf")["adapter_check"] == "ok"
    from contextlib import nullcontext

    monkeypatch.setattr(type(model), "disable_adapter", lambda self: nullcontext())  # adapter never switched off
    with pytest.raises(selfcheck.SelfCheckError, match="does not change"):
        selfcheck.check_adapter(model, tok, "hf")


def test_reference_check_sees_the_adapter_switched_off(monkeypatch):
    """Notebook 05's implicit reward log pi_SFT - log pi_base needs the scorer to honour disable_adapter: passes
    with a trained adapter, skipped with a fresh one, fails when switching off changes nothing."""
    from contextlib import nullcontext

    from helpers import config

    model, tok = training.load_model(config.preset("smoke"), "hf")
    assert selfcheck.check_reference(model, tok)["reference_check"].startswith("skipped")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    out = selfcheck.check_reference(model, tok)
    assert out["reference_check"] == "ok" and out["max_abs_logratio"] > 1e-4
    monkeypatch.setattr(type(model), "disable_adapter", lambda self: nullcontext())  # the kernels ignore the flag
    with pytest.raises(selfcheck.SelfCheckError, match="implicit reward"):
        selfcheck.check_reference(model, tok)


# ---------------------------------------------------------------------------------------
# Cold start on Unsloth: a tokenized dataset with labels (prompt masked), not prompt/completion columns
def test_tokenized_sft_dataset_masks_the_prompt_and_keeps_the_answer_turn():
    from helpers import data

    _, tok = training.load_embedded_base()
    rows = data.load_gsm8k_rows("train", "bundled", n=3)
    convo = data.sft_dataset(rows)
    ds = data.tokenized_sft_dataset(convo, tok, max_length=512)
    assert set(ds.column_names) == {"input_ids", "attention_mask", "labels"}  # no `text`: Unsloth uses it as is
    for ex, row in zip(ds, rows):
        answer = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
        assert ex["labels"][: len(ex["labels"]) - len(answer)] == [-100] * (len(ex["labels"]) - len(answer))
        text = tok.decode(answer)
        assert text.startswith("<reasoning>") and text.rstrip().endswith("<|im_end|>")
        assert data.format_solution(row["answer"]) in text
        prompt = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100])
        assert row["question"] in prompt and "<reasoning>\n" not in prompt.split("assistant")[-1]


def test_cold_start_on_unsloth_gives_sft_trainer_labels(monkeypatch, tmp_path):
    import trl

    from helpers import config, data

    seen = {}

    class RecordingSFTTrainer:
        def __init__(self, model, args, train_dataset, processing_class, callbacks):
            seen["columns"] = train_dataset.column_names

        def train(self):
            pass

        def is_world_process_zero(self):
            return True

    monkeypatch.setattr(trl, "SFTTrainer", RecordingSFTTrainer)
    cfg = config.preset("smoke")
    model, tok = training.load_model(cfg, "hf")
    _, info = training.cold_start_sft(cfg, model, tok, data.load_gsm8k_rows("train", "bundled", n=8), tmp_path,
                                      backend="unsloth")
    assert seen["columns"] == ["input_ids", "attention_mask", "labels"]
    assert "pre-SFT base" in info["reference_model"] and (tmp_path / "sft_lora").exists()


def test_judge_is_loaded_through_unsloth_on_the_unsloth_backend(monkeypatch):
    """A plain-transformers judge breaks once Unsloth has patched the classes (apply_qkv): load it with Unsloth."""
    import sys
    import types

    from helpers import writing

    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            calls["from_pretrained"] = kw
            return "judge-model", "judge-tok"

        @staticmethod
        def for_inference(model):
            calls["for_inference"] = model

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    assert writing.load_judge("Qwen/Qwen2.5-7B-Instruct", backend="unsloth") == ("judge-model", "judge-tok")
    assert calls["from_pretrained"]["fast_inference"] is False  # the policy already holds the one vLLM engine
    assert calls["from_pretrained"]["model_name"] == "Qwen/Qwen2.5-7B-Instruct" and calls["for_inference"] == "judge-model"


def test_hf_decoding_ignores_the_models_generation_defaults():
    """vLLM's SamplingParams ignore generation_config.json (Qwen2.5: repetition_penalty 1.05, top_k 20...);
    the hf path must decode the same way, or the two backends evaluate different decoders."""
    from helpers import config, evaluation

    model, tok = training.load_model(config.preset("smoke"), "hf")
    prompts = evaluation.chat_prompts(tok, ["What is 2 + 3? Answer with one number."])
    plain = evaluation.generate(model, tok, prompts, max_new_tokens=24)
    model.generation_config.repetition_penalty = 3.0
    model.generation_config.top_k = 5
    try:
        assert evaluation.generate(model, tok, prompts, max_new_tokens=24) == plain
    finally:
        model.generation_config.repetition_penalty, model.generation_config.top_k = 1.0, 50
