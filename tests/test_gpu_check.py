"""scripts/gpu-check.sh (+ scripts/gpu_check.py), the check for a real GPU, run here on the CPU: its dry run (the same
steps on tiny sizes, fp32 and bf16), the tokenizer it ships, and its offline install's failure message. No GPU is
needed; on a GPU machine, `bash scripts/gpu-check.sh` runs the same code on CUDA."""
from __future__ import annotations

import importlib.util
import lzma
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

SUMMARY = re.compile(r"^gpu-check: OK device=cpu selfcheck_fp32=(\S+) selfcheck_bf16=(\S+) grpo_rule_steps=2 "
                     r"grpo_logprob_steps=2 eval_rows=4 seconds=(\S+)$", re.M)


def run_script(args: list[str], tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.time()
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "none"),
                              "GPU_CHECK_VENV": str(tmp_path / "venv"), **env})
    return out, time.time() - t0


def test_cpu_dry_run_passes_well_under_a_minute(tmp_path):
    out, wall = run_script(["--device", "cpu"], tmp_path)
    match = SUMMARY.search(out.stdout)
    assert out.returncode == 0 and match, out.stdout[-3000:] + out.stderr[-3000:]
    fp32, bf16, seconds = (float(x) for x in match.groups())
    assert fp32 <= 2e-3 and bf16 <= 0.15, "the self-check's own tolerances (fp32, 16-bit)"
    assert float(seconds) < 60 and wall < 90, f"the dry run took {seconds} s ({wall:.0f} s with start-up)"
    assert "problem:" not in out.stdout


def test_the_shipped_tokenizer_is_the_embedded_models_vocabulary_and_small(tmp_path):
    """SmolLM2's tokenizer (49,152 tokens, ChatML chat template), saved from the GGUF: well under 1 MiB in the tree."""
    from transformers import AutoTokenizer

    data = ROOT / "scripts" / "gpu_check_data"
    assert sum(p.stat().st_size for p in data.iterdir()) < 2**20
    for name in gpu_check.TOKENIZER_FILES:
        (tmp_path / name).write_bytes((data / name).read_bytes())
    (tmp_path / "tokenizer.json").write_bytes(lzma.decompress((data / "tokenizer.json.xz").read_bytes()))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 49152
    prompt = tok.apply_chat_template([{"role": "user", "content": "2 + 2?"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n2 + 2?<|im_end|>" in prompt


def test_transformers_5_is_named_with_the_way_out():
    problems = gpu_check.version_problems({"transformers": "5.17.0", "trl": "0.18.2", "peft": "0.15.2"})
    assert len(problems) == 1 and "transformers 5.17.0 found, 4.52.4 needed" in problems[0]
    assert "--fetch-wheels" in problems[0] and gpu_check.version_problems(dict(gpu_check.PINS)) == []


def test_summary_line_says_fail_and_what_is_missing():
    check = gpu_check.Check("cuda")
    check.results.update(device="NVIDIA_H200(sm90)", selfcheck_fp16="1.20e-02", grpo_rule_steps=2)
    check.problems.append("grpo_logprob_steps: RuntimeError: boom")
    line = gpu_check.summary_line(check, 12.34)
    assert line == ("gpu-check: FAIL device=NVIDIA_H200(sm90) selfcheck_fp16=1.20e-02 selfcheck_bf16=missing "
                    "grpo_rule_steps=2 grpo_logprob_steps=missing eval_rows=missing seconds=12.3")


def offline_install(tmp_path, requirements: str):
    """gpu-check.sh with a wheel folder (one placeholder: any *.whl switches the install on) and `requirements` in
    place of requirements-colab-hf.txt."""
    wheels, req = tmp_path / "wheels", tmp_path / "requirements.txt"
    wheels.mkdir()
    (wheels / "placeholder-0.0.0-py3-none-any.whl").write_bytes(b"")
    req.write_text(requirements)
    out, _ = run_script(["--device", "cpu"], tmp_path, GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_REQUIREMENTS=str(req))
    return out, wheels, req


def test_offline_install_goes_into_a_venv_over_the_machines_packages_and_keeps_its_torch(tmp_path):
    """The pins are installed from the folder alone (--no-index) into a venv that sees this Python's packages (here
    the pins asked for are present, so pip installs nothing), this torch kept as a constraint; the check runs there."""
    import torch

    out, wheels, req = offline_install(tmp_path, "trl==0.18.2\ntransformers==4.52.4\n")
    assert out.returncode == 0 and SUMMARY.search(out.stdout), out.stdout[-3000:] + out.stderr[-3000:]
    assert f"installed {req} from {wheels}" in out.stdout and f"(torch {torch.__version__} kept)" in out.stdout
    assert (tmp_path / "venv" / "keep-torch.txt").read_text() == f"torch=={torch.__version__}\n"


def test_offline_install_without_a_needed_wheel_fails_with_a_message(tmp_path):
    out, wheels, req = offline_install(tmp_path, "trl==0.18.2\nno-such-package-gpu-check==1.0\n")
    assert out.returncode == 1 and f"gpu-check: FAIL pip could not install {req} from {wheels} alone" in out.stdout
    assert "no-such-package-gpu-check" in out.stderr and "--fetch-wheels" in out.stdout
    assert "selfcheck" not in out.stdout, "nothing runs after a failed install"
