"""Export a finished run as a standalone model: base weights with the trained LoRA merged in.

    python -m helpers.run --stage export --preset cpu --run-name 01_rule_based
    python -m helpers.run --stage export --preset t4 --run-name 01_rule_based --set gguf=q4_k_m --set push_to_hub=me/r1-smol

Writes <run dir>/merged/ (config, safetensors weights, tokenizer with the chat's real end token `<|im_end|>` as EOS,
generation_config with eos/pad), loadable with `AutoModelForCausalLM.from_pretrained(<run dir>/merged)`.

What is merged, in order (exactly the policy the run trained):
- hf backend: the base model; then, for a run with a cold start (config.json sft_steps > 0), its SFT adapter
  `sft_lora/` (training.cold_start_sft merged it into the base before GRPO put a fresh LoRA on top); then final_lora/.
  The SFT adapter is looked up in the run directory, then in its parent: an ablation variant `<grid>/<name>` shares
  the grid's cold start `<grid>/sft_lora`.
- unsloth backend (Colab): final_lora/ only (Unsloth keeps the SFT in the adapter GRPO goes on training), saved by
  Unsloth's `save_pretrained_merged(..., save_method="merged_16bit")` (4-bit bases are dequantized to 16 bit);
  optionally a GGUF (`save_pretrained_gguf`, quantization e.g. "q4_k_m") in <run dir>/gguf/.
Pushing to the Hub is opt-in (`push_to_hub="user/repo"`) and takes the token only from Colab's secrets
(the key icon on the left, a secret named HF_TOKEN): never from a notebook cell, a file or the command line.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from . import runtime, training
from .config import ConfigError, RunConfig


def run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig a run was trained with (its config.json; fields RunConfig no longer has are dropped)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: is {Path(run_dir).name!r} a run directory?")
    saved = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig.from_dict({k: v for k, v in saved.items() if k in known})


def find_sft_lora(run_dir: str | Path) -> Path | None:
    """The cold-start adapter of a run: <run>/sft_lora, else <grid>/sft_lora for an ablation variant."""
    run_dir = Path(run_dir)
    for d in (run_dir, run_dir.parent):
        if (d / "sft_lora" / "adapter_model.safetensors").exists():
            return d / "sft_lora"
    return None


def hub_token() -> str:
    """HF_TOKEN from Colab's secrets; anything else is refused (no token in cells, files or arguments)."""
    try:
        from google.colab import userdata  # type: ignore
    except ImportError as exc:
        raise RuntimeError("push_to_hub takes the token from Colab's secrets (a secret named HF_TOKEN) and this is "
                           "not Colab. Upload <run dir>/merged yourself, e.g. with `huggingface-cli upload`.") from exc
    token = userdata.get("HF_TOKEN")
    if not token:
        raise RuntimeError("No HF_TOKEN in Colab's secrets: add it (key icon, left bar) with write access.")
    return token


def policy_model(run_dir: str | Path, cfg: RunConfig, backend: str = "hf"):
    """(model with the run's trained policy as a LoRA on top, tokenizer, info): the model as training left it."""
    run_dir = Path(run_dir)
    final = run_dir / "final_lora"
    if not training.is_finished(run_dir):
        raise ConfigError(f"{run_dir} is not a finished run (no final_lora/ and train_summary.json): train it first.")
    model, tok = training.load_model(cfg, backend)
    info = {"base": cfg.model_name, "final_lora": str(final), "sft_lora": None}
    if backend == "hf" and cfg.sft_steps > 0:
        sft = find_sft_lora(run_dir)
        if sft is None:
            raise FileNotFoundError(f"{run_dir} was trained with a cold start (sft_steps={cfg.sft_steps}) but no "
                                    "sft_lora/ was found in it or its parent directory.")
        training.load_adapter_weights(model, sft)
        model = training.merge_and_refresh_lora(model, cfg.seed)
        info["sft_lora"] = str(sft)
    training.load_adapter_weights(model, final)
    return model, tok, info


def export_run(run_dir: str | Path, backend: str = "hf", *, gguf: str | None = None,
               push_to_hub: str | None = None) -> dict:
    """Merge the run's adapters into the base and save <run dir>/merged/ (see the module docstring)."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    out = run_dir / "merged"
    model, tok, info = policy_model(run_dir, cfg, backend)
    if out.exists():
        shutil.rmtree(out)
    if backend == "unsloth":  # Colab only: these calls are checked against the pinned wheel (test_colab_contract)
        model.save_pretrained_merged(str(out), tok, save_method="merged_16bit")
        if gguf:
            model.save_pretrained_gguf(str(run_dir / "gguf"), tok, quantization_method=gguf)
            info["gguf"] = str(run_dir / "gguf")
        if push_to_hub:
            model.push_to_hub_merged(push_to_hub, tok, save_method="merged_16bit", token=hub_token())
    else:
        if gguf:
            raise ConfigError("GGUF export needs the unsloth backend (Colab). On hf, convert <run dir>/merged with "
                              "llama.cpp's convert_hf_to_gguf.py.")
        merged = model.merge_and_unload()
        if hasattr(merged, "peft_config"):
            del merged.peft_config
        merged.generation_config.eos_token_id = tok.eos_token_id
        merged.generation_config.pad_token_id = tok.pad_token_id
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        tmp.replace(out)
        if push_to_hub:
            token = hub_token()
            merged.push_to_hub(push_to_hub, token=token)
            tok.push_to_hub(push_to_hub, token=token)
    if push_to_hub:
        info["pushed_to"] = push_to_hub
    info.update(merged=str(out), backend=backend)
    runtime.atomic_write_json(run_dir / "export.json", info)
    print(f"[export] {run_dir.name}: merged model written to {out}")
    return info
