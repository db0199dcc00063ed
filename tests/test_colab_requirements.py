"""Checks on requirements-colab.txt (+ requirements-colab-nodeps.txt), the pinned Google Colab GPU stack, and on
requirements-colab-hf.txt, the set Colab's default runtime (Python 3.13) gets over its own torch.

1. Every requirement line is ``name==version``; vLLM and torch carry the pins vLLM needs.
2. trl / transformers / peft (and every other package pinned in both files, torch
   excepted) have the same pins as requirements-cpu.txt.
3. For each supported Colab runtime version (2025.07: Python 3.11; 2026.07: Python 3.12), pip's resolver
   accepts the set on that runtime's Python *with that runtime's preinstalled packages in place*
   (scripts/colab_resolve.py: a venv of metadata-only copies of its pip-freeze list, tests/data/colab/),
   every requirement Unsloth declares is met except the protobuf<4 it is installed without, and what the
   install downgrades among the run-time packages is named in the README. The output lists what is replaced.
4. Colab's default runtime (Python 3.13): the fast path's pins do not resolve there, so the setup cell gives it the
   hf plan: requirements-colab-hf.txt (exact pins, the same versions as the fast path and CPU files) resolves over
   that runtime's preinstalled packages with its torch 2.11.0+cu128 kept (a pip constraint, as the setup cell
   passes it), and what it downgrades among the run-time packages is named in the docs.

Tests 3-4 (the resolver parts) need the package registry. They are skipped only when the registry cannot be reached; any other
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
HF_REQUIREMENTS = ROOT / "requirements-colab-hf.txt"
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


# The hf set: what it must pin, and what it must never touch (Colab's torch, and the fast path's GPU packages,
# which have no Python 3.13 build). bitsandbytes: the hf backend loads 16-bit weights only.
HF_REQUIRED = ("trl", "transformers", "peft", "accelerate", "datasets", "math-verify", "tokenizers",
               "huggingface-hub")
HF_FORBIDDEN = ("torch", "torchvision", "torchaudio", "triton", "vllm", "xformers", "unsloth", "unsloth-zoo",
                "bitsandbytes")


def test_hf_set_is_exact_pins_matching_the_fast_path_and_cpu_and_leaves_torch_alone():
    hf, bad = strict_pins(HF_REQUIREMENTS)
    assert not bad, "every requirement line must be name==version:\n" + "\n".join(bad)
    assert [n for n in HF_REQUIRED if n not in hf] == [], "requirements-colab-hf.txt misses a pin"
    assert [n for n in HF_FORBIDDEN if n in hf] == [], "the hf set must not install the GPU stack or replace torch"
    assert hf["transformers"] == "4.52.4", "transformers 5 breaks trl 0.18.2's GRPOTrainer import (looks for vllm)"
    colab, _ = strict_pins(COLAB_REQUIREMENTS)
    cpu = loose_pins(CPU_REQUIREMENTS)
    differing = {n: (v, colab.get(n), cpu.get(n)) for n, v in hf.items()
                 if (n in colab and colab[n] != v) or (n in cpu and cpu[n] != v)}
    assert not differing, f"pins differ (hf, fast path, cpu): {differing}"


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


FAST_ON_DEFAULT = f"{colab_resolve.DEFAULT_RUNTIME}:fast"  # the fast pins on Python 3.13: must still fail


def start_resolution() -> None:
    """Start the dry-run resolution for every runtime (each with its own install), and the fast pins on the default
    runtime, in the background, once."""
    if _JOBS:
        return
    jobs = {runtime: (runtime, None) for runtime in colab_resolve.ALL_RUNTIMES}
    jobs[FAST_ON_DEFAULT] = (colab_resolve.DEFAULT_RUNTIME, "fast")
    for key, (runtime, stack) in jobs.items():
        try:
            _JOBS[key] = colab_resolve.Job(runtime, stack=stack).start()
        except Exception as exc:  # noqa: BLE001 - e.g. the pip wheel could not be fetched: the test reports it
            _JOBS[key] = exc


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


def resolved_or_fail(runtime: str, what: str):
    """The background resolution of `runtime` (printed), skipping when the registry is unreachable, failing with
    pip's message when it does not resolve."""
    skip_if_offline()
    res = resolution(runtime)
    if not res.ok:
        if looks_like_network_failure(res.stderr) and registry_unreachable.__wrapped__():
            pytest.skip(f"package registry became unreachable during resolution:\n{tail(res.stderr, 8)}")
        pytest.fail(f"pip could not resolve {what} (Python {res.python}, exit {res.returncode}):\n{tail(res.stderr)}")
    print("\n" + res.summary())
    return res


@pytest.mark.network
@pytest.mark.parametrize("runtime", list(colab_resolve.RUNTIMES))
def test_pins_resolve_on_each_supported_runtime_over_its_preinstalled_packages(runtime):
    res = resolved_or_fail(runtime, f"the Colab requirements on runtime {runtime}")
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


def named_in_docs(res) -> list[str]:
    """The run-time packages `res` downgrades that neither the README nor docs/*.md names ("name old-version")."""
    critical = [(n, a, b) for n, a, b in res.changes()["downgraded"] if n in colab_resolve.RUNTIME_CRITICAL]
    text = README.read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    return [f"{n} {a}" for n, a, _ in critical if f"{n} {a}" not in text]


@pytest.mark.network
def test_default_runtime_python_313_gets_the_hf_set_over_its_own_torch():
    """`scripts/colab_resolve.py --runtime 2026.08-default`: the hf set resolves over the default runtime's packages,
    Colab's torch stays, every hf pin is what ends up installed, and the run-time downgrades are documented."""
    from helpers import colab_setup

    full = colab_resolve.runtime_python(colab_resolve.DEFAULT_RUNTIME)
    version = tuple(int(x) for x in full.split("."))
    assert version[:2] == (3, 13) and colab_setup.install_plan(version) == "hf"
    assert colab_resolve.ALL_RUNTIMES[colab_resolve.DEFAULT_RUNTIME]["stack"] == "hf"
    assert colab_resolve.STACKS["hf"]["keep"] == colab_setup.KEEP, "the resolver keeps what the setup cell keeps"

    res = resolved_or_fail(colab_resolve.DEFAULT_RUNTIME, "requirements-colab-hf.txt on the default runtime")
    if not res.interpreter:
        print(f"note: no Python {res.python} on this machine: pip ran on {sys.version.split()[0]} with "
              f"--python-version {res.python}, so environment markers were evaluated for this interpreter")
    assert res.preinstalled.get("torch", "").startswith("2.11.0"), "the default runtime's package list was not read"
    assert res.replaced_kept() == [] and "torch" not in res.installed, "Colab's torch must not be replaced"
    final = res.final_environment()
    wrong = {n: (v, final.get(n)) for n, v in strict_pins(HF_REQUIREMENTS)[0].items() if final.get(n) != v}
    assert not wrong, f"after the install these differ from the pins (pinned, present): {wrong}"
    assert not [n for n in HF_FORBIDDEN if n in res.installed], res.installed
    unnamed = named_in_docs(res)
    assert not unnamed, f"the README / docs must name these run-time downgrades on the default runtime: {unnamed}"


@pytest.mark.network
def test_default_runtime_cannot_install_the_fast_pins():
    """The reason for the hf plan, checked both ways: the fast path's pins still have no build for Python 3.13 (if
    they resolve one day, revisit the hf plan), and the setup cell gives 3.13 the hf plan, 3.11/3.12 the fast one."""
    from helpers import colab_setup

    for runtime in colab_resolve.RUNTIMES:
        supported = tuple(int(x) for x in colab_resolve.runtime_python(runtime).split("."))
        assert colab_setup.install_plan(supported) == "fast", runtime
        assert f"{supported[0]}.{supported[1]}" == colab_resolve.RUNTIMES[runtime]["python"]

    skip_if_offline()
    res = resolution(FAST_ON_DEFAULT)
    assert not res.ok, "the fast pins resolve on Python 3.13 now: revisit the hf plan of helpers/colab_setup.py"
    assert "vllm" in res.stderr.lower() or "requires-python" in res.stderr.lower() or "unsloth" in res.stderr.lower(), \
        tail(res.stderr)
