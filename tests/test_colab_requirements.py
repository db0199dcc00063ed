"""Checks on requirements-colab.txt (+ requirements-colab-nodeps.txt), the pinned Google Colab GPU stack.

1. Every requirement line is ``name==version``; vLLM and torch carry the pins vLLM needs.
2. trl / transformers / peft (and every other package pinned in both files, torch
   excepted) have the same pins as requirements-cpu.txt.
3. For each supported Colab runtime version (2025.07: Python 3.11; 2026.07: Python 3.12), pip's resolver
   accepts the set on that runtime's Python *with that runtime's preinstalled packages in place*
   (scripts/colab_resolve.py: a venv of metadata-only copies of its pip-freeze list, tests/data/colab/),
   every requirement Unsloth declares is met except the protobuf<4 it is installed without, and what the
   install downgrades among the run-time packages is named in the README. The output lists what is replaced.
4. Colab's default runtime (Python 3.13): the pins do not resolve there, and the setup cell refuses it.

Tests 3-4 need the package registry. They are skipped only when the registry cannot be reached; any other
resolver failure fails the test with the tail of pip's output. Run with ``pytest -s`` to see the changes.
The resolutions start in the background when the tests are collected (tests/conftest.py) and take about
10 s each once pip has cached the metadata (PEP 658 metadata files; a first run downloads more).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_REQUIREMENTS = ROOT / "requirements-colab.txt"
NODEPS_REQUIREMENTS = ROOT / "requirements-colab-nodeps.txt"
CPU_REQUIREMENTS = ROOT / "requirements-cpu.txt"

# Pins that the rest of the Colab stack depends on (vllm 0.8.5.post1 requires torch==2.6.0).
REQUIRED_PINS = {"vllm": "0.8.5.post1", "torch": "2.6.0"}

# Packages the Colab file must pin (any version).
REQUIRED_PACKAGES = (
    "vllm", "torch", "torchvision", "torchaudio", "xformers",
    "unsloth", "unsloth-zoo", "trl", "transformers", "peft",
    "bitsandbytes", "accelerate", "datasets", "math-verify",
    "gguf", "matplotlib", "pandas", "ipywidgets", "nbmake", "tqdm",
)

# These must be pinned with == in both files, to the same version.
MUST_MATCH_CPU = ("trl", "transformers", "peft")
# Pinned in both files on purpose with different versions (CPU build vs CUDA build).
MAY_DIFFER_FROM_CPU = frozenset({"torch", "torchvision", "torchaudio"})

RESOLVE_TIMEOUT_S = 900
PROBE_TIMEOUT_S = 120
# A small pure-Python wheel from the pinned set, used to tell "registry unreachable"
# apart from a real resolution failure.
PROBE_REQUIREMENT = "math-verify==0.7.0"

# Text that pip prints when it cannot reach the index.
NETWORK_ERROR_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "ConnectTimeoutError",
    "ProxyError",
    "Could not fetch URL",
)

PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line, comments stripped."""
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if text:
            lines.append((number, text))
    return lines


def strict_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """Pins of a file whose every requirement must be ``name==version``.

    Returns (normalized name -> version, list of offending lines).
    """
    pins: dict[str, str] = {}
    bad: list[str] = []
    for number, text in requirement_lines(path):
        match = PIN_LINE.match(text)
        if match is None:
            bad.append(f"{path.name}:{number}: {text!r}")
            continue
        name = normalize(match["name"])
        if name in pins:
            bad.append(f"{path.name}:{number}: {name} pinned twice")
        pins[name] = match["version"]
    return pins, bad


def loose_pins(path: Path) -> dict[str, str]:
    """Packages pinned with == in an ordinary requirements file (others are ignored)."""
    pins: dict[str, str] = {}
    for _, text in requirement_lines(path):
        if text.startswith("-"):  # pip options such as --index-url or -r
            continue
        spec = text.split(";", 1)[0].strip()  # drop environment markers
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s,]+)$", spec)
        if match:
            pins[normalize(match[1])] = match[3]
    return pins


# --------------------------------------------------------------------------- 1. format


def test_colab_requirements_are_all_exact_pins():
    pins, bad = strict_pins(COLAB_REQUIREMENTS)
    nodeps, bad_nodeps = strict_pins(NODEPS_REQUIREMENTS)
    bad += bad_nodeps + [f"{name} pinned in both Colab files" for name in pins.keys() & nodeps.keys()]
    pins = {**pins, **nodeps}
    assert not bad, "every requirement line must be name==version:\n" + "\n".join(bad)
    assert set(nodeps) == {"unsloth", "unsloth-zoo"}, "only Unsloth is installed with --no-deps"
    assert pins, "requirements-colab.txt pins nothing"
    for name, version in REQUIRED_PINS.items():
        assert pins.get(name) == version, f"expected {name}=={version}, found {pins.get(name)}"
    missing = [name for name in REQUIRED_PACKAGES if normalize(name) not in pins]
    assert not missing, f"requirements-colab.txt does not pin: {missing}"


# --------------------------------------------------------------------------- 2. same as CPU


def test_trl_transformers_peft_pins_match_cpu_requirements():
    assert CPU_REQUIREMENTS.exists(), f"{CPU_REQUIREMENTS} is missing"
    colab, _ = strict_pins(COLAB_REQUIREMENTS)
    cpu = loose_pins(CPU_REQUIREMENTS)
    for name in MUST_MATCH_CPU:
        assert name in colab, f"{name} is not pinned in requirements-colab.txt"
        assert name in cpu, f"{name} is not pinned with == in requirements-cpu.txt"
        assert colab[name] == cpu[name], (
            f"{name}: requirements-colab.txt pins {colab[name]}, requirements-cpu.txt pins {cpu[name]}"
        )


def test_packages_pinned_in_both_files_agree():
    colab, _ = strict_pins(COLAB_REQUIREMENTS)
    cpu = loose_pins(CPU_REQUIREMENTS)
    differing = {
        name: (colab[name], cpu[name])
        for name in sorted(colab.keys() & cpu.keys())
        if name not in MAY_DIFFER_FROM_CPU and colab[name] != cpu[name]
    }
    assert not differing, f"pins differ between Colab and CPU (colab, cpu): {differing}"


# --------------------------------------------------------------------------- 3. resolver

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("colab_resolve", ROOT / "scripts" / "colab_resolve.py")
colab_resolve = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("colab_resolve", colab_resolve)
_spec.loader.exec_module(colab_resolve)

pip_env = colab_resolve.pip_env


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def looks_like_network_failure(output: str) -> bool:
    return any(marker in output for marker in NETWORK_ERROR_MARKERS)


@functools.lru_cache(maxsize=None)
def registry_unreachable() -> str | None:
    """A reason string when the package registry cannot be reached, else None."""
    with tempfile.TemporaryDirectory() as dest:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
               "--only-binary=:all:", "--timeout", "15", "--retries", "1",
               "--dest", dest, "--quiet", PROBE_REQUIREMENT]
        try:
            probe = subprocess.run(cmd, capture_output=True, text=True, env=pip_env(),
                                   timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`pip download {PROBE_REQUIREMENT}` did not finish in {PROBE_TIMEOUT_S}s"
    output = probe.stdout + probe.stderr
    if probe.returncode != 0 and (looks_like_network_failure(output) or "from versions: none" in output):
        return f"package registry unreachable:\n{tail(output, 8)}"
    return None


# The resolutions are mostly waiting on the index, so the suite starts them in the background as soon as these
# tests are collected (tests/conftest.py) and the tests only wait: their time overlaps the CPU-bound tests.
_JOBS: dict = {}


def start_resolution() -> None:
    """Start the dry-run resolution for every runtime (supported ones and the default one) in the background, once."""
    if _JOBS:
        return
    for runtime in colab_resolve.ALL_RUNTIMES:
        try:
            _JOBS[runtime] = colab_resolve.Job(runtime).start()
        except Exception as exc:  # noqa: BLE001 - e.g. the pip wheel could not be fetched: the test reports it
            _JOBS[runtime] = exc


def stop_resolution() -> None:
    """Kill resolutions still running (the session ends without the tests, or they skipped)."""
    for job in _JOBS.values():
        if isinstance(job, colab_resolve.Job):
            job.kill()
    _JOBS.clear()


def resolution(runtime: str):
    start_resolution()
    job = _JOBS[runtime]
    if isinstance(job, Exception):
        pytest.fail(f"could not start the resolution for runtime {runtime}: {job}")
    return job.result(timeout=RESOLVE_TIMEOUT_S)


def skip_if_offline():
    reason = registry_unreachable()
    if reason:
        stop_resolution()
        pytest.skip(reason)


README = ROOT / "README.md"


@pytest.mark.network
@pytest.mark.parametrize("runtime", list(colab_resolve.RUNTIMES))
def test_pins_resolve_on_each_supported_runtime_over_its_preinstalled_packages(runtime):
    skip_if_offline()
    res = resolution(runtime)
    if not res.ok:
        if looks_like_network_failure(res.stderr) and registry_unreachable.__wrapped__():
            pytest.skip(f"package registry became unreachable during resolution:\n{tail(res.stderr, 8)}")
        pytest.fail(f"pip could not resolve the Colab requirements on runtime {runtime} "
                    f"(Python {res.python}, exit {res.returncode}):\n{tail(res.stderr)}")
    print("\n" + res.summary())
    if not res.interpreter:  # still a real resolution (wheel tags and Requires-Python are the runtime's)
        print(f"note: no Python {res.python} on this machine: pip ran on {sys.version.split()[0]} with "
              f"--python-version {res.python}, so environment markers were evaluated for this interpreter")
    assert len(res.preinstalled) > 500, "the runtime's pip-freeze list was not read"

    final = res.final_environment()
    pins = {**strict_pins(COLAB_REQUIREMENTS)[0], **strict_pins(NODEPS_REQUIREMENTS)[0]}
    wrong = {name: (version, final.get(name)) for name, version in pins.items()
             if final.get(name, "").split("+")[0] != version}
    assert not wrong, f"after the install these differ from the pins (pinned, present): {wrong}"
    unmet = res.unmet_nodeps_requirements()
    assert not unmet, "Unsloth, installed with --no-deps, would miss:\n" + "\n".join(unmet)
    assert "protobuf" in colab_resolve.NODEPS_EXCEPTIONS and any(
        r.replace(" ", "").startswith("protobuf<4") for r in res.nodeps_requires.get("unsloth-zoo", [])), \
        "unsloth_zoo no longer declares protobuf<4: drop the exception"

    critical = [(n, a, b) for n, a, b in res.changes()["downgraded"] if n in colab_resolve.RUNTIME_CRITICAL]
    readme = README.read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    unnamed = [f"{n} {a}" for n, a, _ in critical if f"{n} {a}" not in readme]
    assert not unnamed, f"runtime {runtime}: the README / docs must name these run-time downgrades: {unnamed}"
    assert all(n not in ("numpy", "ipywidgets", "pandas") for n, _, _ in critical), critical


@pytest.mark.network
def test_default_runtime_python_313_does_not_resolve_and_is_refused():
    """Both directions: the pins really have no build for Colab's default runtime, and the setup cell refuses it."""
    from helpers import colab_setup

    full = colab_resolve.runtime_python(colab_resolve.DEFAULT_RUNTIME)
    version = tuple(int(x) for x in full.split("."))
    assert version[:2] == (3, 13)
    assert not colab_setup.python_supported(version)
    assert "Python 3.13" in colab_setup.refusal_message(version)
    for runtime in colab_resolve.RUNTIMES:
        supported = tuple(int(x) for x in colab_resolve.runtime_python(runtime).split("."))
        assert colab_setup.python_supported(supported), runtime
        assert f"{supported[0]}.{supported[1]}" == colab_resolve.RUNTIMES[runtime]["python"]

    skip_if_offline()
    res = resolution(colab_resolve.DEFAULT_RUNTIME)
    assert not res.ok, "the pins resolve on Python 3.13 now: revisit the setup cell's refusal"
    assert "vllm" in res.stderr.lower() or "requires-python" in res.stderr.lower() or "unsloth" in res.stderr.lower(), \
        tail(res.stderr)
