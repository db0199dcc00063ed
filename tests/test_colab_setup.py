"""The notebooks' Colab setup cell, run as it is (its own source, read from each notebook) on simulated runtimes.

- Python 3.13 (Colab's default runtime since 2026-08-19): the hf plan. The cell installs requirements-colab-hf.txt
  with Colab's torch pinned as a pip constraint (never requirements-colab.txt), checks in a fresh interpreter that
  transformers, peft, trl and trl's GRPOTrainer import, stamps, restarts once, and prints what is happening (the
  transformers backend, slower, estimates, how to get the fast path) on every Run all.
- Python 3.10-3.12 (runtime versions 2025.07 / 2026.07): the fast path, the pinned Unsloth + vLLM stack.
- Either way only a passing import check writes the stamp that skips the install next time; a failing import stops
  with its name, no stamp. An older Python is refused before any pip call.
subprocess.run is replaced by a recorder, so nothing is cloned or installed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from helpers import colab_setup

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def setup_cell(nb: Path) -> str:
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    return "".join(cells[0]["source"])


class Recorder:
    """Stands for subprocess.run: records each command; the import check answers with `import_report`."""

    def __init__(self, import_report: dict, returncode: int = 0):
        self.calls: list[list[str]] = []
        self.import_report, self.returncode = import_report, returncode

    def __call__(self, cmd, *args, **kwargs):
        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        if cmd[0] == "nvidia-smi":
            return subprocess.CompletedProcess(cmd, 0, "Tesla T4, 550.54.15, 15360 MiB\n", "")
        if "-c" in cmd and colab_setup.IMPORT_CHECK in cmd:
            return subprocess.CompletedProcess(cmd, self.returncode, json.dumps(self.import_report) + "\n", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def pip_calls(self):
        return [c for c in self.calls if "pip" in c]


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """A simulated Colab kernel: google.colab importable, the repo 'cloned' at tmp_path/repo (this checkout's
    requirement files), nvidia-smi on PATH, the kernel kill intercepted."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in colab_setup.REQUIREMENT_FILES + colab_setup.HF_REQUIREMENT_FILES:
        (repo / name).write_text((ROOT / name).read_text())
    monkeypatch.setenv("LOGPROB_REPO_DIR", str(repo))
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260819-060000_RC00")
    monkeypatch.setattr(colab_setup.shutil, "which", lambda name: "/usr/bin/" + name)
    kills = []
    monkeypatch.setattr(colab_setup.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.chdir(tmp_path)
    return types.SimpleNamespace(repo=repo, kills=kills)


def run_cell(nb: Path, monkeypatch, recorder: Recorder, python=(3, 11, 13)) -> dict:
    """Exec the notebook's own setup cell with subprocess.run recorded and sys.version_info simulated; both are put
    back right after (pytest itself reads them), the fixture's other patches stay. Returns the cell's namespace."""
    real_run, real_version = subprocess.run, sys.version_info
    subprocess.run, sys.version_info = recorder, python + ("final", 0)
    namespace: dict = {}
    try:
        exec(compile(setup_cell(nb), f"{nb.name}[setup cell]", "exec"), namespace)  # the notebook's own code
    finally:
        subprocess.run, sys.version_info = real_run, real_version
    return namespace


HF_GOOD = {"torch": "2.11.0+cu128", "cuda": "12.8", "cuda_available": True, "transformers": "4.52.4",
           "peft": "0.15.2", "trl": "0.18.2", "trl.GRPOTrainer": "ok"}
COLAB_TORCH = "2.11.0+cu128"  # what Colab's default runtime has preinstalled (tests/data/colab/)


@pytest.fixture
def colab_torch(monkeypatch):
    """The kernel's torch is Colab's (this venv's torch is a CPU build)."""
    real = colab_setup.preinstalled_version
    monkeypatch.setattr(colab_setup, "preinstalled_version", lambda name: COLAB_TORCH if name == "torch" else real(name))


def assert_hf_install(colab, recorder):
    """The hf plan's pip calls, in order: the hf set with Colab's torch as a constraint, helpers, the embedded model;
    then one import check in a fresh interpreter, for a GPU, with the hf imports."""
    pips = recorder.pip_calls()
    keep = colab.repo / colab_setup.KEEP_FILE
    assert pips[0][-4:] == ["-c", str(keep), "-r", str(colab.repo / "requirements-colab-hf.txt")], pips[0]
    assert [c[-2:] for c in pips[1:]] == [["-e", str(colab.repo)], ["--no-deps", colab_setup.SMOLLM2]]
    assert all("--no-deps" in c for c in pips[1:])
    assert not any("requirements-colab.txt" in " ".join(c) or "requirements-colab-nodeps.txt" in " ".join(c)
                   for c in pips), "the fast path's pins cannot install on Python 3.13"
    assert keep.read_text() == f"torch=={COLAB_TORCH}\n", "Colab's torch must be pinned, so pip cannot replace it"
    check = [c for c in recorder.calls if colab_setup.IMPORT_CHECK in c]
    assert len(check) == 1 and check[0][-2:] == ["gpu", "hf"]
    assert recorder.calls.index(check[0]) > recorder.calls.index(pips[-1])


def assert_hf_paragraph(printed: str, python: tuple):
    paragraph = " ".join(printed.split())  # the paragraph is wrapped
    assert f"Colab's default runtime (Python {python[0]}.{python[1]}.{python[2]})" in paragraph
    assert 'transformers backend (BACKEND "hf"' in paragraph and f"{colab_setup.HF_PRESET} preset" in paragraph
    assert f"roughly {colab_setup.HF_SLOWDOWN} slower" in paragraph and "estimates" in paragraph
    assert "Runtime → Change runtime type → Runtime version → 2025.07" in paragraph


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_python_313_installs_the_hf_set_over_colabs_torch_and_does_not_refuse(nb, colab, colab_torch, monkeypatch,
                                                                               capsys):
    python = (3, 13, 15)
    recorder = Recorder(HF_GOOD)
    run_cell(nb, monkeypatch, recorder, python=python)  # no SystemExit: no refusal
    printed = capsys.readouterr().out
    assert_hf_install(colab, recorder)
    assert_hf_paragraph(printed, python)
    assert "STOP" not in printed and "Nothing has been installed" not in printed
    assert (colab.repo / colab_setup.STAMP).exists()
    assert len(colab.kills) == 1, "the kernel is ended once after the install"
    assert "Colab's torch was kept" in printed and "run all cells again" in printed

    # the second Run all: the stamp matches, nothing is installed, the paragraph is printed again
    second = Recorder(HF_GOOD)
    namespace = run_cell(nb, monkeypatch, second, python=python)
    assert second.pip_calls() == [] and len(colab.kills) == 1
    assert_hf_paragraph(capsys.readouterr().out, python)
    assert Path.cwd() == colab.repo / "notebooks" and namespace["REPO_ROOT"] == colab.repo


def test_python_314_gets_the_hf_plan_too(colab, colab_torch, monkeypatch, capsys):
    run_cell(NOTEBOOKS[0], monkeypatch, Recorder(HF_GOOD), python=(3, 14, 0))
    assert "Python 3.14.0" in capsys.readouterr().out and (colab.repo / colab_setup.STAMP).exists()


def test_hf_plan_stops_when_grpo_trainer_does_not_import(colab, colab_torch, monkeypatch, capsys):
    """What transformers 5 does to trl 0.18.2: the check imports GRPOTrainer, names it, and writes no stamp."""
    report = {**{k: v for k, v in HF_GOOD.items() if k != "trl.GRPOTrainer"}, "transformers": "5.15.0",
              "failed": "trl.GRPOTrainer", "error": "ModuleNotFoundError: No module named 'vllm'"}
    with pytest.raises(SystemExit) as stop:
        run_cell(NOTEBOOKS[0], monkeypatch, Recorder(report, returncode=1), python=(3, 13, 15))
    printed = capsys.readouterr().out
    assert "trl.GRPOTrainer" in str(stop.value) and "No module named 'vllm'" in printed
    assert "default runtime's transformers install" in printed and "→ 2025.07" in printed
    assert not (colab.repo / colab_setup.STAMP).exists() and colab.kills == []


@pytest.mark.parametrize("python", [(3, 9, 18), (3, 8, 10)])
def test_older_pythons_are_refused_before_any_pip_call(python, colab, monkeypatch, capsys):
    recorder = Recorder({})
    with pytest.raises(SystemExit) as stop:
        run_cell(NOTEBOOKS[0], monkeypatch, recorder, python=python)
    printed = capsys.readouterr().out
    assert recorder.pip_calls() == []
    assert f"Python {python[0]}.{python[1]}" in printed and "2025.07" in str(stop.value)
    assert "Runtime → Change runtime type → Runtime version → 2025.07" in printed
    assert "check it each time you connect" in printed  # the choice may not persist across sessions
    assert len(printed.splitlines()) <= 20, "the message must fit on one screen"
    assert not (colab.repo / colab_setup.STAMP).exists()


GOOD = {"torch": "2.6.0+cu124", "cuda": "12.4", "cuda_available": True, "unsloth": "2025.6.12",
        "vllm": "0.8.5.post1", "trl": "0.18.2"}


@pytest.mark.parametrize("python", [(3, 11, 13), (3, 12, 13)], ids=["2025.07", "2026.07"])
def test_supported_runtime_installs_checks_imports_then_stamps_and_restarts(python, colab, monkeypatch, capsys):
    recorder = Recorder(GOOD)
    run_cell(NOTEBOOKS[0], monkeypatch, recorder, python=python)
    pips = recorder.pip_calls()
    assert [c[-1] for c in pips] == [str(colab.repo / "requirements-colab.txt"),
                                     str(colab.repo / "requirements-colab-nodeps.txt"),
                                     str(colab.repo), colab_setup.SMOLLM2]
    assert "--no-deps" in pips[1] and "--no-deps" in pips[2] and "--no-deps" in pips[3]
    check = [c for c in recorder.calls if colab_setup.IMPORT_CHECK in c]
    assert len(check) == 1 and check[0][-1] == "gpu", "the import check runs once, after the pip calls, for a GPU"
    assert recorder.calls.index(check[0]) > recorder.calls.index(pips[-1])
    assert (colab.repo / colab_setup.STAMP).exists()
    assert len(colab.kills) == 1, "the kernel is ended after a fresh install"
    assert "run all cells again" in capsys.readouterr().out

    # the second Run all: the stamp matches, nothing is installed, the cell goes on to the notebooks folder
    second = Recorder(GOOD)
    namespace = run_cell(NOTEBOOKS[0], monkeypatch, second, python=python)
    assert namespace["IN_COLAB"] and "google.colab" in sys.modules, "the second run must still look like Colab"
    assert second.pip_calls() == [] and len(colab.kills) == 1
    assert Path.cwd() == colab.repo / "notebooks" and namespace["REPO_ROOT"] == colab.repo


def test_failing_import_stops_with_its_name_and_writes_no_stamp(colab, monkeypatch, capsys):
    recorder = Recorder({"torch": "2.6.0+cu124", "cuda": "12.4", "cuda_available": True, "failed": "vllm",
                         "error": "ImportError: libcudart.so.12: cannot open shared object file"}, returncode=1)
    with pytest.raises(SystemExit) as stop:
        run_cell(NOTEBOOKS[0], monkeypatch, recorder)
    printed = capsys.readouterr().out
    assert "import vllm" in str(stop.value)
    assert "`import vllm` fails" in printed and "libcudart.so.12" in printed
    assert "release-colab_20260819" in printed, "the message names the runtime version"
    assert not (colab.repo / colab_setup.STAMP).exists(), "a failed check must not skip the install next time"
    assert colab.kills == []


def test_failed_pip_call_stops_with_pips_output(colab, monkeypatch, capsys):
    class FailingPip(Recorder):
        def __call__(self, cmd, *args, **kwargs):
            if "pip" in [str(c) for c in cmd]:
                self.calls.append([str(c) for c in cmd])
                raise subprocess.CalledProcessError(1, cmd, "", "ERROR: No matching distribution found for vllm")
            return super().__call__(cmd, *args, **kwargs)

    with pytest.raises(SystemExit):
        run_cell(NOTEBOOKS[0], monkeypatch, FailingPip(GOOD))
    assert "No matching distribution found for vllm" in capsys.readouterr().out
    assert not (colab.repo / colab_setup.STAMP).exists()


def test_changed_requirements_invalidate_the_stamp(tmp_path):
    for name in colab_setup.REQUIREMENT_FILES + colab_setup.HF_REQUIREMENT_FILES:
        (tmp_path / name).write_text((ROOT / name).read_text())
    before = colab_setup.stack_fingerprint(tmp_path, (3, 11, 13))
    hf = colab_setup.stack_fingerprint(tmp_path, (3, 13, 15))
    assert before == colab_setup.stack_fingerprint(tmp_path, (3, 11, 13))
    assert len({before, hf, colab_setup.stack_fingerprint(tmp_path, (3, 12, 13))}) == 3
    (tmp_path / "requirements-colab.txt").write_text("torch==2.6.0\n")
    assert before != colab_setup.stack_fingerprint(tmp_path, (3, 11, 13))
    assert hf == colab_setup.stack_fingerprint(tmp_path, (3, 13, 15)), "the hf plan does not read the fast pins"
    (tmp_path / "requirements-colab-hf.txt").write_text("trl==0.18.2\n")
    assert hf != colab_setup.stack_fingerprint(tmp_path, (3, 13, 15))


def test_import_check_script_reports_the_first_failing_import(tmp_path):
    """The real IMPORT_CHECK in a real fresh interpreter, with `torch` made unimportable: it names torch."""
    (tmp_path / "torch.py").write_text("raise ImportError('simulated broken torch')\n")
    out = subprocess.run([sys.executable, "-c", colab_setup.IMPORT_CHECK, "gpu"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 1 and report["failed"] == "torch" and "simulated broken torch" in report["error"]


def test_hf_import_check_catches_trl_looking_for_vllm(tmp_path):
    """The real IMPORT_CHECK, hf plan, in a fresh interpreter over stand-in packages: torch with CUDA, and a trl whose
    GRPOTrainer fails the way trl 0.18.2 does under transformers 5. `import trl` alone passes; the check names
    trl.GRPOTrainer."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "__version__ = '2.11.0+cu128'\nclass version: cuda = '12.8'\n"
        "class cuda:\n    @staticmethod\n    def is_available(): return True\n")
    (tmp_path / "transformers.py").write_text("__version__ = '5.15.0'\n")
    (tmp_path / "peft.py").write_text("__version__ = '0.15.2'\n")
    (tmp_path / "trl.py").write_text("__version__ = '0.18.2'\n"
                                      "def __getattr__(name): raise ModuleNotFoundError(\"No module named 'vllm'\")\n")
    out = subprocess.run([sys.executable, "-c", colab_setup.IMPORT_CHECK, "gpu", "hf"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 1 and report["failed"] == "trl.GRPOTrainer", report
    assert report["trl"] == "0.18.2" and "No module named 'vllm'" in report["error"]
    (tmp_path / "trl.py").write_text("__version__ = '0.18.2'\nGRPOTrainer = object\n")
    out = subprocess.run([sys.executable, "-c", colab_setup.IMPORT_CHECK, "gpu", "hf"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and json.loads(out.stdout)["trl.GRPOTrainer"] == "ok"


def test_setup_module_is_standard_library_only():
    """It runs before anything is installed: no third-party import, no import of another helpers module."""
    import ast

    tree = ast.parse((ROOT / "helpers" / "colab_setup.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert all(name in sys.stdlib_module_names or name == "__future__" for name in names), names
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))


def test_banner_names_the_colab_image_python_torch_cuda_driver_and_gpu(monkeypatch, capsys):
    """Results depend on the Colab image: on a (simulated) Colab T4 the banner prints the runtime tag, Python,
    torch and the CUDA it was built for, the driver and the GPU."""
    from types import SimpleNamespace

    import torch

    from helpers import runtime

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250725-060057_RC00")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(name="Tesla T4", total_memory=15 * 2**30))
    monkeypatch.setattr(colab_setup, "gpu_summary", lambda: {"gpu": "Tesla T4", "driver": "550.54.15"})
    runtime.reset_hardware_cache()
    try:
        text = runtime.banner()
    finally:
        runtime.reset_hardware_cache()
    assert "Colab runtime: release-colab_20250725-060057_RC00" in text
    assert f"python {sys.version_info.major}.{sys.version_info.minor}" in text
    assert f"torch {torch.__version__} built for CUDA" in text and "driver 550.54.15" in text
    assert "GPU: Tesla T4" in text
