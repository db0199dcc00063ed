"""Resolve the Colab install the way pip will on a given Colab runtime version, its preinstalled packages
included, and say what the install replaces.

    .venv/bin/python scripts/colab_resolve.py                 # every runtime (2025.07, 2026.07, 2026.08-default)
    .venv/bin/python scripts/colab_resolve.py --runtime 2025.07 --json out.json
    .venv/bin/python scripts/colab_resolve.py --runtime 2026.08-default   # the default runtime's hf set

Two installs (helpers/colab_setup.py picks one by the runtime's Python): the fast path on 2025.07 / 2026.07
(requirements-colab.txt, then requirements-colab-nodeps.txt with --no-deps), and on the default runtime (Python 3.13)
the hf set, requirements-colab-hf.txt, constrained to keep Colab's torch (``KEEP``: exit 1 if pip would replace it).

How: a throw-away virtual environment of the runtime's Python (pyenv's or ``python3.X`` on PATH; otherwise this
interpreter with ``--python-version``) gets one metadata-only ``.dist-info`` folder per line of that runtime's
``pip freeze`` list (tests/data/colab/, from googlecolab/backend-info). pip (run from its own wheel, so that the
environment holds only Colab's packages) then resolves the Colab requirements there with ``--dry-run --report``:
like on Colab, it keeps a preinstalled version whenever it satisfies the pins, and the report lists what it would
install. Comparing that with the freeze list gives what is replaced, upgraded, downgraded or new. Then the
``--no-deps`` set (requirements-colab-nodeps.txt: Unsloth, installed without its declared protobuf<4) is fetched,
and every requirement it declares is checked against the environment the install leaves.

The fake folders carry no dependency lists, so pip does not re-check what Colab's own packages require; the
packages that matter at run time are compared by name and version (``RUNTIME_CRITICAL``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
COLAB_DATA = ROOT / "tests" / "data" / "colab"
REQUIREMENTS = ROOT / "requirements-colab.txt"
NODEPS_REQUIREMENTS = ROOT / "requirements-colab-nodeps.txt"
HF_REQUIREMENTS = ROOT / "requirements-colab-hf.txt"

# What each install runs: (requirements file, --no-deps?) in order, and the preinstalled packages it must keep (the
# setup cell passes them to pip as constraints at their preinstalled versions).
STACKS = {
    "fast": dict(steps=((REQUIREMENTS, False), (NODEPS_REQUIREMENTS, True)), keep=()),
    "hf": dict(steps=((HF_REQUIREMENTS, False),), keep=("torch",)),
}

# Runtime versions the fast path supports (Colab: Runtime > Change runtime type > Runtime version), their Python
# and the pip-freeze list Colab published for them.
RUNTIMES = {
    "2025.07": dict(python="3.11", freeze="pip-freeze.2025.07.txt", stack="fast"),
    "2026.07": dict(python="3.12", freeze="pip-freeze.gpu.2026.07.txt", stack="fast"),
}
# The default runtime since 2026-08-19: Python 3.13, for which the fast path's pins have no build; it gets the hf
# set over its own torch (the test also resolves the fast pins there, to show that they still do not install).
DEFAULT_RUNTIME = "2026.08-default"
ALL_RUNTIMES = {**RUNTIMES,
                DEFAULT_RUNTIME: dict(python="3.13", freeze="pip-freeze.gpu.2026.08-default.txt", stack="hf")}
OS_INFO = {"2025.07": "os-info.2025.07.txt", "2026.07": "os-info-gpu.2026.07.txt",
           DEFAULT_RUNTIME: "os-info-gpu.2026.08-default.txt"}


def runtime_python(runtime: str) -> str:
    """The full Python version Colab's os-info file lists for `runtime`, e.g. '3.11.13'."""
    text = (COLAB_DATA / OS_INFO[runtime]).read_text()
    return re.search(r"^Python (\d+\.\d+\.\d+)", text, re.M)[1]

# Preinstalled packages the curriculum (or Colab's Hub / notebook front end it relies on) uses at run time: a
# downgrade of one of them is named in the README.
RUNTIME_CRITICAL = ("torch", "numpy", "protobuf", "ipywidgets", "pandas", "huggingface-hub", "triton")

# Requirements declared by the --no-deps packages that the install deliberately does not meet, and why.
NODEPS_EXCEPTIONS = {
    "protobuf": "unsloth_zoo 2025.6.8 declares protobuf<4 but never imports google.protobuf "
                "(tests/test_colab_contract.py pins that), so Colab keeps its protobuf",
}

# pip does not expand a manylinux_2_28 platform to older glibc tags by itself, so every tag Colab's Ubuntu 22.04
# (glibc 2.35) accepts is listed.
PLATFORMS = ([f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)]
             + ["manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64",
                "manylinux1_x86_64", "linux_x86_64", "any"])


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_freeze(path: Path) -> dict[str, tuple[str, str]]:
    """normalized name -> (name as listed, version) of a ``pip freeze`` file. ``name @ url`` lines take the version
    from the wheel or sdist file name in the url; lines without one (a git url) are skipped."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.startswith("#") else ""
        if not line:
            continue
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
        elif " @ " in line:
            name, url = (part.strip() for part in line.split(" @ ", 1))
            stem = url.rsplit("/", 1)[-1].split("#", 1)[0].replace("%2B", "+")
            match = re.match(r"^[A-Za-z0-9_.]+?-(\d[^-]*?)(?:\.tar\.gz|\.zip|-[^-]+-[^-]+-[^-]+\.whl)$", stem)
            if match is None:
                continue
            version = match[1]
        else:
            continue
        pins[normalize(name)] = (name, version)
    return pins


def requirement_pins(path: Path) -> dict[str, str]:
    """normalized name -> version of a file of ``name==version`` lines (comments and blank lines skipped)."""
    pins = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[normalize(name)] = version
    return pins


@functools.lru_cache(maxsize=None)
def find_python(version: str) -> str | None:
    """A CPython interpreter of `version` (e.g. "3.12") on this machine: this one, ``python3.12`` on PATH, or a
    pyenv build. None if there is none (the resolution then runs here with --python-version)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python3") for p in sorted(pyenv.glob(f"{version}.*"), reverse=True)]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return candidate
    return None


NETWORK_SETTINGS = ("index-url", "cert", "client-cert", "trusted-host", "proxy")


@functools.lru_cache(maxsize=None)
def pip_env() -> dict[str, str]:
    """Environment for pip: the machine's index and TLS settings, nothing else from its config (a constraint file
    or extra index configured for this machine must not decide what resolves for Colab)."""
    env = dict(os.environ)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            env=env, timeout=60)
    for line in listed.stdout.splitlines():
        match = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if match and match[1] in NETWORK_SETTINGS:
            env.setdefault("PIP_" + match[1].upper().replace("-", "_"), match[2])
    env["PIP_CONFIG_FILE"] = os.devnull
    for key in ("PIP_CONSTRAINT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_REQUIREMENT",
                "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_REQUIRE_VIRTUALENV", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def pip_wheel(cache: Path) -> Path:
    """This environment's pip as a wheel file (``python pip.whl/pip`` runs it without installing it anywhere)."""
    import importlib.metadata

    version = importlib.metadata.version("pip")
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"pip-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                        "-d", str(cache), f"pip=={version}"], check=True, env=pip_env(), timeout=300)
        found = sorted(cache.glob(f"pip-{version}-*.whl"))
    return found[0]


def fake_environment(freeze: dict[str, tuple[str, str]], python: str, root: Path) -> str:
    """A venv of `python` at `root` holding one metadata-only .dist-info per preinstalled package; its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    venv_python = str(root / "bin" / "python")
    purelib = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    for name, version in freeze.values():
        info = Path(purelib) / f"{re.sub(r'[-.]+', '_', name)}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("colab-freeze\n")
        (info / "RECORD").write_text("")
    return venv_python


def keep_constraints(freeze: dict[str, tuple[str, str]], keep: tuple[str, ...], path: Path) -> Path | None:
    """A pip constraints file pinning each `keep` package to its preinstalled version (what the setup cell passes
    with -c), or None when there is nothing to keep."""
    lines = [f"{freeze[n][0]}=={freeze[n][1]}" for n in map(normalize, keep) if n in freeze]
    if not lines:
        return None
    path.write_text("\n".join(lines) + "\n")
    return path


def dry_run_command(python_for_pip: str, wheel: Path, python_version: str, requirements: Path, *,
                    no_deps: bool = False, constraints: Path | None = None) -> list[str]:
    abi = "cp" + python_version.replace(".", "")
    cmd = [python_for_pip, str(wheel / "pip"), "install", "--dry-run", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--abi", abi]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    if no_deps:
        cmd.append("--no-deps")
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    return cmd + ["--quiet", "--report", "-", "-r", str(requirements)]


@dataclass
class Resolution:
    """What the install does on one runtime version."""
    runtime: str
    python: str
    interpreter: str  # the interpreter pip ran under ("" when the runtime's Python was not found here)
    stack: str = "fast"  # which install: "fast" (Unsloth + vLLM pins) or "hf" (the default runtime's set)
    keep: tuple[str, ...] = ()  # preinstalled packages the install must not replace
    returncode: int = 0
    stderr: str = ""
    installed: dict[str, str] = field(default_factory=dict)  # what pip installs (both steps): name -> version
    preinstalled: dict[str, str] = field(default_factory=dict)
    nodeps_requires: dict[str, list[str]] = field(default_factory=dict)  # --no-deps package -> its Requires-Dist

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def changes(self) -> dict[str, list[tuple[str, str, str]]]:
        """{'downgraded'|'upgraded'|'replaced'|'new': [(name, preinstalled version, installed version)]}."""
        out: dict[str, list] = {"downgraded": [], "upgraded": [], "replaced": [], "new": []}
        for name, version in sorted(self.installed.items()):
            before = self.preinstalled.get(name)
            if before is None:
                out["new"].append((name, "", version))
                continue
            try:
                old, new = Version(before), Version(version)
            except InvalidVersion:
                out["replaced"].append((name, before, version))
                continue
            kind = "downgraded" if new < old else "upgraded" if new > old else "replaced"
            out[kind].append((name, before, version))
        return out

    def final_environment(self) -> dict[str, str]:
        return {**self.preinstalled, **self.installed}

    def replaced_kept(self) -> list[str]:
        """The `keep` packages the install would replace (must be none), as 'name before -> after'."""
        return [f"{n} {self.preinstalled.get(n, '(none)')} -> {self.installed[n]}"
                for n in map(normalize, self.keep) if n in self.installed]

    def unmet_nodeps_requirements(self) -> list[str]:
        """Requirements of the --no-deps packages that the environment after the install does not satisfy, except
        those in NODEPS_EXCEPTIONS. Markers are evaluated for the runtime's Python on Linux x86_64."""
        env = self.final_environment()
        markers = {"python_version": self.python, "python_full_version": self.python + ".0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
        unmet = []
        for package, requires in self.nodeps_requires.items():
            for text in requires:
                req = Requirement(text)
                if req.marker is not None and not req.marker.evaluate(markers):
                    continue
                name = normalize(req.name)
                if name in NODEPS_EXCEPTIONS:
                    continue
                have = env.get(name)
                if have is None or not req.specifier.contains(Version(have).public if "+" in have else have,
                                                              prereleases=True):
                    unmet.append(f"{package} requires {text}; the environment has {name} {have or '(none)'}")
        return unmet

    def summary(self) -> str:
        ch = self.changes()
        lines = [f"runtime {self.runtime} (Python {self.python}, {len(self.preinstalled)} packages preinstalled, "
                 f"{self.stack} install): the install adds {len(ch['new'])}, upgrades {len(ch['upgraded'])}, "
                 f"downgrades {len(ch['downgraded'])}, replaces {len(ch['replaced'])} at the same version"]
        if ch["new"] and self.stack == "hf":  # a short list there (the fast path adds vLLM's ~45 dependencies)
            lines.append("  new: " + ", ".join(f"{n} {b}" for n, _, b in ch["new"]))
        for kind in ("downgraded", "upgraded", "replaced"):
            if ch[kind]:
                lines.append(f"  {kind}: " + ", ".join(f"{n} {a} -> {b}" for n, a, b in ch[kind]))
        critical = [n for n, _, _ in ch["downgraded"] if n in RUNTIME_CRITICAL]
        lines.append(f"  run-time packages downgraded: {', '.join(critical) if critical else 'none'}")
        if self.keep:
            kept = [f"{n} {self.preinstalled.get(normalize(n), '(none)')}" for n in self.keep]
            replaced = self.replaced_kept()
            lines.append(f"  kept (pip constraint): {', '.join(kept)}"
                         + (f"; REPLACED: {', '.join(replaced)}" if replaced else ": not replaced"))
        return "\n".join(lines)


def _read_report(stdout: str) -> dict[str, dict]:
    report = json.loads(stdout) if stdout.strip() else {"install": []}
    return {normalize(item["metadata"]["name"]): item for item in report.get("install", [])}


class Job:
    """One runtime's resolution running in the background: start() returns at once, result() waits. `stack`
    ("fast" or "hf") overrides the install the runtime gets (the test resolves the fast pins on 3.13 too)."""

    def __init__(self, runtime: str, workdir: Path | None = None, cache: Path | None = None, stack: str | None = None):
        self.runtime = runtime
        self.spec = ALL_RUNTIMES[runtime]
        self.stack = stack or self.spec["stack"]
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"colab-{runtime}-"))
        self.cache = Path(cache or Path.home() / ".cache" / "logprob-curriculum" / "pip-wheel")
        self.procs: list = []
        self.result_: Resolution | None = None

    def start(self) -> "Job":
        python = self.spec["python"]
        interpreter = find_python(python)
        freeze = parse_freeze(COLAB_DATA / self.spec["freeze"])
        stack = STACKS[self.stack]
        self.resolution = Resolution(self.runtime, python, interpreter or "", self.stack, stack["keep"],
                                     preinstalled={k: v for k, (_, v) in freeze.items()})
        env_python = fake_environment(freeze, interpreter or sys.executable, self.workdir / "venv")
        constraints = keep_constraints(freeze, stack["keep"], self.workdir / "keep.txt")
        wheel = pip_wheel(self.cache)
        for requirements, no_deps in stack["steps"]:
            out = tempfile.TemporaryFile("w+")
            err = tempfile.TemporaryFile("w+")
            cmd = dry_run_command(env_python, wheel, python, requirements, no_deps=no_deps, constraints=constraints)
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=pip_env())
            self.procs.append((proc, out, err, no_deps))
        return self

    def kill(self) -> None:
        for proc, *_ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def result(self, timeout: float = 900) -> Resolution:
        if self.result_ is not None:
            return self.result_
        res = self.resolution
        for proc, out, err, no_deps in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                res.returncode, res.stderr = 124, f"pip did not finish in {timeout:.0f} s"
                break
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            if proc.returncode != 0:
                res.returncode, res.stderr = proc.returncode, stderr
                break
            items = _read_report(stdout)
            for name, item in items.items():
                res.installed[name] = item["metadata"]["version"]
                if no_deps:
                    res.nodeps_requires[name] = list(item["metadata"].get("requires_dist") or [])
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.result_ = res
        return res


def resolve(runtime: str, timeout: float = 900) -> Resolution:
    """Resolve the Colab install of `runtime` (a key of ALL_RUNTIMES) and wait for the result."""
    return Job(runtime).start().result(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=list(ALL_RUNTIMES), action="append",
                        help="runtime version (default: every one)")
    parser.add_argument("--json", type=Path, help="write what each install changes to this file")
    args = parser.parse_args(argv)
    jobs = [Job(r).start() for r in (args.runtime or list(ALL_RUNTIMES))]
    results, code = {}, 0
    for job in jobs:
        res = job.result()
        if not res.ok:
            print(f"runtime {res.runtime}: pip failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
            code = 1
            continue
        print(res.summary())
        unmet = res.unmet_nodeps_requirements()
        for line in unmet:
            print(f"  UNMET: {line}")
        code = code or (1 if unmet or res.replaced_kept() else 0)
        results[res.runtime] = {"python": res.python, "interpreter": res.interpreter, "stack": res.stack,
                                **res.changes()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
