"""Where we are running: Colab or not, GPU and bf16, which backend, where runs are saved.

Nothing here imports transformers or trl: Unsloth must be imported before them, so the backend
is decided first (`pick_backend`) and everything heavy is imported lazily afterwards.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

RUNS_ENV = "GRPO_RUNS_DIR"  # override for the runs root, e.g. a scratch disk


def is_colab() -> bool:
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


@lru_cache(maxsize=None)
def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# An A100 has 40 or 80 GB; an L4 (24 GB) has bf16 but not the memory for the a100 preset (Qwen2.5-3B in 16 bit,
# 1024-token completions, vLLM taking 60 % of the card).
A100_PRESET_MIN_GIB = 35.0


@lru_cache(maxsize=None)
def gpu_info() -> dict | None:
    """{'name', 'capability': (major, minor), 'memory_gib'} of CUDA device 0, or None without CUDA."""
    if not has_cuda():
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "capability": tuple(torch.cuda.get_device_capability(0)),
            "memory_gib": props.total_memory / 2**30}


@lru_cache(maxsize=None)
def bf16_supported() -> bool:
    """bf16 in hardware: compute capability 8.0 or newer (Ampere: A100, L4, ...; not the T4, sm75).

    Not `torch.cuda.is_bf16_supported()`: since torch 2.4 it counts *emulation* and says True on a T4,
    until Unsloth re-patches it at import (unsloth/__init__.py), which may not have happened yet."""
    info = gpu_info()
    return info is not None and info["capability"] >= (8, 0)


# CPU bf16 matrix units. At SmolLM2-135M's size CPU generation is memory-bound: bf16 weights halve the bytes read per
# token. Measured on 2 cores with AMX (benchmarks/generation.py): the bare model generates 1.2x (batch 4) to 1.5x
# (batch 16) the tokens/s of fp32, the unmerged LoRA model that GRPO samples from 1.0x to 1.14x (its fp32 adapters add
# small ops per layer), forward + backward about 1.45x, and a cpu-preset GRPO step takes 0.78x the fp32 time. That
# pays only where the CPU multiplies bf16 natively; elsewhere oneDNN emulates it, so fp32 stays.
CPU_BF16_ENV = "HELPERS_CPU_BF16"  # "0": never use CPU bf16 (the tests set this), "1": use it without detection
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names: Intel AMX (Sapphire Rapids+), AVX512-BF16
CPUINFO = Path("/proc/cpuinfo")


# What a CPU without bf16 matrix units costs (banner): one benchmarks/learning.py seed of the cpu preset took 32.3 min
# on a 2-core x86_64 CPU with AMX (bf16 base) and FP32_CPU_MINUTES[1] on a 2-core AMD EPYC with AVX2 only (fp32), 2026-12-03.
FP32_CPU_MINUTES = (32.3, 54.0)
FP32_CPU_NOTE = (f"no bf16 matrix units (AMX / AVX512-BF16): the model runs in fp32, and the times quoted for the cpu "
                 f"preset on a CPU with AMX take about {FP32_CPU_MINUTES[1] / FP32_CPU_MINUTES[0]:.1f}x as long here "
                 f"(one benchmark seed: {FP32_CPU_MINUTES[0]:.0f} vs {FP32_CPU_MINUTES[1]:.0f} min on 2 cores, "
                 "docs/results.md)")


def cpu_flags() -> frozenset[str] | None:
    """The x86 CPU feature flags from /proc/cpuinfo (first processor), or None where they cannot be read (not Linux,
    no file, not x86: an arm64 cpuinfo has a `Features` line, not `flags`; its bf16 is not used here)."""
    if platform.system() != "Linux":
        return None
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return None


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("Intel(R) Xeon(R) ..."), else what `platform` knows: which machine a
    number came from."""
    name = platform.processor() or platform.machine()
    try:
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def _torch_cpu_bf16() -> bool:
    """torch can send bf16 matmuls to oneDNN on this CPU (necessary, not sufficient: it says True on plain AVX-512,
    where oneDNN emulates bf16)."""
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an exotic build: no oneDNN, or the private op moved
        return False


@lru_cache(maxsize=None)
def cpu_bf16_units() -> tuple[str, ...]:
    """The bf16 matrix-unit flags this CPU reports (CPU_BF16_FLAGS found in /proc/cpuinfo); () where none or unknown."""
    flags = cpu_flags()
    return tuple(f for f in CPU_BF16_FLAGS if flags is not None and f in flags)


def cpu_bf16_matmul() -> bool:
    """True when the CPU has bf16 matrix units (AMX or AVX512-BF16, read from /proc/cpuinfo) and torch's oneDNN can
    use them. Never assumed: not Linux, flags unreadable, none found, or HELPERS_CPU_BF16=0 -> False (fp32).

    Not `torch.backends.cpu.get_cpu_capability()`: it names the vector ISA torch dispatches to ("AVX512" on an AMX
    Xeon, torch 2.x) and has no bf16 level."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_bf16_detected()


@lru_cache(maxsize=None)
def _cpu_bf16_detected() -> bool:
    return bool(cpu_bf16_units()) and _torch_cpu_bf16()


def reset_hardware_cache() -> None:
    """Forget cached hardware answers (tests simulate GPUs and CPUs; nothing else needs this)."""
    for fn in (has_cuda, gpu_info, bf16_supported, cpu_bf16_units, _cpu_bf16_detected, pick_backend):
        getattr(fn, "cache_clear", lambda: None)()


def unsloth_installed() -> bool:
    """Unsloth is installed here (looked up, not imported: its import patches transformers and trl). False on
    Colab's default runtime, Python 3.13, where it cannot install (helpers/colab_setup.py)."""
    return importlib.util.find_spec("unsloth") is not None


@lru_cache(maxsize=None)
def pick_backend(preferred: str = "auto") -> str:
    """'unsloth' when CUDA is present and Unsloth imports (imported here, first), else 'hf'."""
    if preferred == "hf" or (preferred == "auto" and not has_cuda()):
        return "hf"
    if preferred == "auto" and not unsloth_installed():
        print("[helpers] Unsloth is not installed (on Colab's default runtime, Python 3.13, it cannot be): using "
              "transformers + peft, slower; the first cell's message says how to get the fast path.")
        return "hf"
    if "transformers" in sys.modules or "trl" in sys.modules:
        # Unsloth patches transformers/trl at import; importing it late gives silent slowdowns or errors.
        print("[helpers] transformers was imported before Unsloth: restart the runtime and run cells in order.")
    try:
        importlib.import_module("unsloth")
    except Exception as exc:  # ImportError, or Unsloth refusing the environment
        if preferred == "unsloth":
            raise RuntimeError(f"Backend 'unsloth' requested but Unsloth failed to import: {exc}") from exc
        print(f"[helpers] Unsloth unavailable ({type(exc).__name__}: {exc}); using transformers + peft.")
        return "hf"
    return "unsloth"


def resolve_precision(precision: str = "auto") -> str:
    """bf16 where the GPU supports it, fp16 on older GPUs (T4); on CPU bf16 with bf16 matrix units
    (`cpu_bf16_matmul`: AMX / AVX512-BF16), else fp32."""
    if precision != "auto":
        return precision
    if not has_cuda():
        return "bf16" if cpu_bf16_matmul() else "fp32"
    return "bf16" if bf16_supported() else "fp16"


def mount_drive() -> bool:
    """Mount Google Drive on Colab (so runs survive a disconnect); a no-op elsewhere."""
    if not is_colab():
        return False
    if Path("/content/drive/MyDrive").exists():
        return True
    from google.colab import drive  # type: ignore

    drive.mount("/content/drive")
    return True


def runs_root(project: str) -> Path:
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    if is_colab() and mount_drive():
        return Path("/content/drive/MyDrive") / project / "runs"
    return Path("runs")


HEADLESS_ENV = "HELPERS_HEADLESS"  # set by scripts/run-notebook.sh: progress as plain text lines
RUN_DIR_NOTE_ENV = "HELPERS_RUN_DIR_NOTE"  # file where banner() writes the run directory (for the wrapper)


def headless() -> bool:
    """True in a run started by scripts/run-notebook.sh (papermill): widget progress bars would not stream
    to the console there, so the helpers print plain-text progress lines instead."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def progress(iterable, desc: str = "", total: int | None = None):
    """tqdm.auto's bar in a notebook or terminal; when headless, one flushed text line per item."""
    if not headless():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    return _text_progress(iterable, desc, total if total is not None else len(iterable))


def _text_progress(iterable, desc: str, total: int, heartbeat: float = 30.0):
    """Yields the items, printing `desc: i/total  N s` after each one, and every `heartbeat` seconds while an
    item is slow (a CPU evaluation batch can take minutes), so a headless console never goes quiet long."""
    import threading
    import time

    t0, done, last, stop = time.time(), [0], [time.time()], threading.Event()

    def beat():
        while not stop.wait(min(heartbeat, 5.0)):
            if time.time() - last[0] >= heartbeat:
                last[0] = time.time()
                print(f"{desc}: {done[0]}/{total}  {time.time() - t0:.0f} s (working on {done[0] + 1})", flush=True)

    print(f"{desc}: 0/{total}", flush=True)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        for i, item in enumerate(iterable, 1):
            yield item
            done[0], last[0] = i, time.time()
            print(f"{desc}: {i}/{total}  {time.time() - t0:.0f} s", flush=True)
    finally:
        stop.set()


def run_dir(project: str, run_name: str) -> Path:
    """MyDrive/<project>/runs/<run_name> on Colab, ./runs/<run_name> elsewhere, $GRPO_RUNS_DIR/<run_name> if set."""
    path = runs_root(project) / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def banner(backend: str | None = None, cfg=None) -> str:
    """One block of text: hardware, backend, precision and package versions. Printed by every notebook."""
    from . import colab_setup

    lines = [f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, colab={is_colab()}"]
    if is_colab():  # results depend on the image: say which one (COLAB_RELEASE_TAG, if Colab sets it)
        lines.append(f"Colab runtime: {colab_setup.colab_runtime_version() or 'not reported'} "
                     f"(fast path: {colab_setup.RECOMMENDED}, {colab_setup.SECOND_CHOICE}; the default runtime, "
                     f"Python 3.13: the hf backend)")
    if has_cuda():
        import torch

        props = torch.cuda.get_device_properties(0)
        cap = ".".join(map(str, gpu_info()["capability"]))
        driver = colab_setup.gpu_summary().get("driver", "?")
        lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, sm{cap}, bf16={bf16_supported()}, "
                     f"torch {torch.__version__} built for CUDA {torch.version.cuda}, driver {driver}")
    else:
        units = ", ".join(cpu_bf16_units()) or "none found"
        lines.append(f"GPU: none (CPU path), CPU bf16 units: {units}, bf16={cpu_bf16_matmul()}")
        if not cpu_bf16_matmul():
            lines.append(FP32_CPU_NOTE)
    if backend:
        lines.append(f"backend: {backend}, precision: {resolve_precision(cfg.precision if cfg else 'auto')}")
    if cfg is not None:
        lines.append(f"preset: {cfg.preset}, model: {cfg.model_name}, steps: {cfg.max_steps}")
        if os.environ.get(RUN_DIR_NOTE_ENV):  # headless: tell the wrapper where the executed copy goes
            Path(os.environ[RUN_DIR_NOTE_ENV]).write_text(str(run_dir(cfg.project, cfg.run_name)))
    pkgs = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify", "unsloth", "vllm"]
    lines.append("  ".join(f"{p}={_version(p)}" for p in pkgs))
    text = "\n".join(lines)
    print(text)
    return text


# ---------------------------------------------------------------------------------------
# Atomic file writes: a kill (or a Colab disconnect) never leaves a half-written file behind.
def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _json_safe(obj):
    """NaN/inf -> None (strict JSON); containers recursively."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj) -> Path:
    import json

    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


def atomic_write_csv(path: str | Path, df) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


# ---------------------------------------------------------------------------------------
# Multi-process runs (accelerate launch / torchrun set these variables before our code runs)
def num_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def saved_files(run_dir: str | Path) -> list[str]:
    """Print and return what a run directory holds, one line per entry with its size."""
    run_dir = Path(run_dir)
    lines = []
    for p in sorted(run_dir.iterdir()):
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        lines.append(f"{p.name + ('/' if p.is_dir() else ''):32s} {size / 2**20:8.2f} MiB")
    print(f"saved in {run_dir}:\n" + "\n".join(lines))
    return lines
