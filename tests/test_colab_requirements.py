"""Checks on requirements-colab.txt, the pinned Google Colab GPU stack.

1. Every requirement line is ``name==version``; vLLM and torch carry the pins vLLM needs.
2. trl / transformers / peft (and every other package pinned in both files, torch
   excepted) have the same pins as requirements-cpu.txt.
3. pip's resolver accepts the whole set for Colab's platform (CPython 3.12,
   manylinux x86_64, wheels only), in dry-run mode: nothing is installed.

Test 3 needs the package registry. It is skipped only when the registry cannot be
reached; any other resolver failure fails the test with the tail of pip's output.
Run with ``pytest -s`` to see how many packages were resolved and how long it took.

Cost of test 3: pip needs every candidate's metadata; when the index does not serve
PEP 658 metadata files, pip 23.x downloads each candidate wheel in full (torch alone is
767 MB). On the project's machines that is about 4.3 GB and 70-135 s per run.
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

# Colab: CPython 3.12 on Ubuntu 22.04 (glibc 2.35), x86_64.
TARGET_PYTHON = "3.12"
TARGET_ABI = "cp312"
# pip does not expand a manylinux_2_28 platform to older glibc tags by itself, so
# every compatible manylinux tag is listed (bitsandbytes ships manylinux_2_24 only).
TARGET_PLATFORMS = (
    [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)]
    + ["manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64",
       "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64", "any"]
)

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
    assert not bad, "every requirement line must be name==version:\n" + "\n".join(bad)
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


# pip settings worth keeping from the machine's pip config: how to reach the index.
NETWORK_SETTINGS = ("index-url", "cert", "client-cert", "trusted-host", "proxy")


@functools.lru_cache(maxsize=None)
def pip_env() -> dict[str, str]:
    """Environment for pip: the machine's index and TLS settings, nothing else from its config.

    A pip config file may carry a constraint file (this machine caps torch for its own
    venv) or local find-links / extra indexes; they must not decide what resolves for
    Colab. So config files are switched off, and only the settings that say how to reach
    the index (NETWORK_SETTINGS) are carried over as PIP_* variables.
    """
    env = dict(os.environ)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, env=env, timeout=60)
    for line in listed.stdout.splitlines():
        match = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if match and match[1] in NETWORK_SETTINGS:
            env.setdefault("PIP_" + match[1].upper().replace("-", "_"), match[2])
    env["PIP_CONFIG_FILE"] = os.devnull
    for key in ("PIP_CONSTRAINT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX",
                "PIP_REQUIREMENT", "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(key, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


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


def resolver_command(requirements: Path, target: str) -> list[str]:
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--dry-run", "--ignore-installed",
        # pip < 23.3 refuses --platform/--abi for `install` without --target, even
        # with --dry-run; nothing is written there.
        "--target", target,
        "--only-binary=:all:",
        "--python-version", TARGET_PYTHON,
        "--implementation", "cp",
        "--abi", TARGET_ABI,
    ]
    for platform in TARGET_PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["--quiet", "--report", "-", "-r", str(requirements)]
    return cmd


# The resolution is mostly downloading (see the module docstring), so the suite starts it in the background as
# soon as this test is collected (tests/conftest.py) and the test only waits for it: its download time overlaps
# the CPU-bound tests instead of adding to the suite's wall time.
_BACKGROUND: dict = {}


def start_resolution() -> None:
    """Start pip's dry-run resolution of requirements-colab.txt in the background (once)."""
    if _BACKGROUND:
        return
    target = tempfile.mkdtemp(prefix="colab-resolve-")
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(resolver_command(COLAB_REQUIREMENTS, target), stdout=out, stderr=err, text=True,
                            env=pip_env())
    _BACKGROUND.update(proc=proc, target=target, out=out, err=err, started=time.monotonic())


def stop_resolution() -> None:
    """Kill a background resolution that is still running (the session ends without the test, or it skipped)."""
    proc = _BACKGROUND.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    if _BACKGROUND:
        import shutil

        shutil.rmtree(_BACKGROUND["target"], ignore_errors=True)
    _BACKGROUND.clear()


def resolve_colab_requirements() -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds since the start) of the resolution: the background one when the suite
    started it, else run now. pytest.fail when it runs past RESOLVE_TIMEOUT_S."""
    start_resolution()
    proc, started = _BACKGROUND["proc"], _BACKGROUND["started"]
    try:
        proc.wait(timeout=max(1.0, RESOLVE_TIMEOUT_S - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        _BACKGROUND["err"].seek(0)
        stderr = _BACKGROUND["err"].read()
        stop_resolution()
        pytest.fail(f"pip's resolver did not finish in {RESOLVE_TIMEOUT_S}s:\n{tail(stderr)}")
    elapsed = time.monotonic() - started
    outputs = []
    for name in ("out", "err"):
        _BACKGROUND[name].seek(0)
        outputs.append(_BACKGROUND[name].read())
    code = proc.returncode
    stop_resolution()
    return code, outputs[0], outputs[1], elapsed


@pytest.mark.network
def test_colab_requirements_resolve_for_colab_platform():
    reason = registry_unreachable()
    if reason:
        stop_resolution()
        pytest.skip(reason)

    code, stdout, stderr, elapsed = resolve_colab_requirements()
    if code != 0:
        if looks_like_network_failure(stderr) and registry_unreachable.__wrapped__():
            pytest.skip(f"package registry became unreachable during resolution:\n{tail(stderr, 8)}")
        pytest.fail(
            f"pip could not resolve {COLAB_REQUIREMENTS.name} for CPython {TARGET_PYTHON} "
            f"manylinux x86_64 (exit {code}, {elapsed:.0f}s since it started):\n{tail(stderr)}"
        )

    report = json.loads(stdout)
    resolved = {normalize(item["metadata"]["name"]): item["metadata"]["version"]
                for item in report["install"]}
    print(f"\npip resolved {len(resolved)} packages for {COLAB_REQUIREMENTS.name} "
          f"(CPython {TARGET_PYTHON}, manylinux x86_64, wheels only) in {elapsed:.1f}s since it started")

    pins, _ = strict_pins(COLAB_REQUIREMENTS)
    wrong = {name: (version, resolved.get(name)) for name, version in pins.items()
             if resolved.get(name) != version}
    assert not wrong, f"resolved versions differ from pins (pinned, resolved): {wrong}"
    not_wheels = [item["download_info"]["url"] for item in report["install"]
                  if not item["download_info"]["url"].endswith(".whl")]
    assert not not_wheels, f"resolver picked non-wheel files: {not_wheels}"
