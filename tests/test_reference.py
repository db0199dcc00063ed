"""Reference results: saved from a run directory with provenance, shown beside the reader's run, committed for every
run a notebook renders, and no notebook types a result interval into its prose."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import reference

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "01_rule_based"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (run / "final_lora").mkdir()
    (run / "final_lora" / "adapter_config.json").write_text("{}")
    (run / "executed_01.ipynb").write_text("{}")
    (run / "probe_steps").mkdir()
    (run / "probe_steps" / "probe_step0025.csv").write_text("a\n1\n")
    pd.DataFrame({"metric": ["strict_accuracy"], "delta": [0.025], "ci95_lo": [-0.005], "ci95_hi": [0.0575]}).to_csv(
        run / "probe_changes.csv", index=False)
    pd.DataFrame({"step": [1, 2, 3, 4], "time": [100.0, 110.0, 121.0, 133.0],
                  "rewards/correctness_reward/mean": [0.0, 0.5, 1.0, 1.5],
                  "logprob_mean/raw_logprob": [-3.0, -2.0, -1.0, 0.0]}).to_csv(run / "metrics.csv", index=False)
    (run / "summary.json").write_text(json.dumps({"label": "SmolLM2 · 4 steps · CPU"}))
    return run


def test_save_keeps_tables_and_json_only_with_provenance(run_dir, tmp_path):
    dest = reference.save(run_dir, command="bash scripts/run-notebook.sh 01 -p PRESET cpu", preset="cpu",
                          wall_seconds=60.0, commit="abc1234", note="alone on the machine", root=tmp_path / "results")
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["metrics.csv", "probe_changes.csv", "probe_steps/probe_step0025.csv", "provenance.json",
                    "summary.json"]
    prov = reference.provenance("01_rule_based", "cpu", tmp_path / "results")
    assert prov["command"].startswith("bash scripts/run-notebook.sh 01") and prov["commit"] == "abc1234"
    assert prov["label"] == "SmolLM2 · 4 steps · CPU" and prov["machine"] and prov["date_utc"]
    line = reference.describe("01_rule_based", "cpu", tmp_path / "results")
    assert "1.0 min wall" in line and "abc1234" in line and prov["machine"] in line and "(alone on the machine)" in line


def test_save_refuses_large_files_and_missing_runs(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "MAX_FILE_BYTES", 10)
    with pytest.raises(ValueError, match="over 10 bytes"):
        reference.save(run_dir, command="x", preset="cpu", root=tmp_path / "results")
    with pytest.raises(reference.ReferenceError, match="run the notebook first"):
        reference.save(tmp_path / "nope", command="x", preset="cpu", root=tmp_path / "results")


def test_show_stacks_reference_and_yours_and_falls_back_to_cpu(run_dir, tmp_path, capsys):
    root = tmp_path / "results"
    reference.save(run_dir, command="cmd", preset="cpu", root=root)
    only_ref = reference.show("probe_changes.csv", "01_rule_based", preset="smoke", root=root)  # smoke -> cpu
    assert list(only_ref["run"]) == ["reference"] and "reference '01_rule_based' (cpu preset" in capsys.readouterr().out
    both = reference.show("probe_changes.csv", "01_rule_based", yours=run_dir, root=root, columns=["metric", "delta"])
    assert list(both["run"]) == ["reference", "yours"] and list(both.columns) == ["run", "metric", "delta"]
    with pytest.raises(reference.ReferenceError, match="no nothing.csv"):
        reference.read("01_rule_based", "nothing.csv", root=root)
    with pytest.raises(reference.ReferenceError, match="save_reference"):
        reference.folder("02_logprob", root=root)


def test_training_summary_first_and_last_steps(run_dir):
    t = reference.training_summary(run_dir / "metrics.csv", k=2).set_index("metric")
    assert t.loc["correctness reward", "first 2 steps"] == 0.25 and t.loc["correctness reward", "last 2 steps"] == 1.25
    assert t.loc["logprob_mean raw log-prob of the gold answer", "last 2 steps"] == -0.5
    assert t.loc["seconds per step (median)", "last 2 steps"] == 11.5  # diffs 10, 11, 12: the last two


# ---- the committed references and the notebooks' prose ----------------------------------------------
SHOW_CALL = re.compile(r"reference\.(show|read|show_training)\(\s*(?:\"([^\"]+)\"\s*,\s*)?\"([^\"]+)\"")


def shown_files():
    """(notebook, run name, file) for every reference call with literal arguments in a notebook's code."""
    out = []
    for nb in NOTEBOOKS:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for kind, first, second in SHOW_CALL.findall("".join(cell["source"])):
                    if kind == "show_training":
                        out.append((nb.name, second, "metrics.csv"))
                    elif kind == "read":
                        out.append((nb.name, first, second))
                    else:
                        out.append((nb.name, second, first))
    return out


def test_every_reference_a_notebook_shows_is_committed_with_provenance():
    calls = shown_files()
    assert {nb for nb, _, _ in calls} >= {"01_rule_based_grpo.ipynb", "02_logprob_rewards.ipynb",
                                          "05_likelihood_beyond_the_reward.ipynb"}
    for nb, name, relpath in calls:
        prov = reference.provenance(name, "cpu")
        assert prov["command"] and prov["machine"] and prov["date_utc"] and prov["commit"], (nb, name)
        assert (reference.folder(name) / relpath).exists(), f"{nb} shows {name}/{relpath}, which is not committed"


# an interval typed into prose: "[+0.09, +0.31]", "[−0.010, +0.100]", "(−1.06 to +0.12)"
TYPED_INTERVAL = re.compile(r"[\[(]\s*[−+-]?\d*\.\d+\s*(,|to)\s*[−+-]?\d*\.\d+\s*[\])]")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_markdown_cell_types_a_result_interval(nb):
    for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            found = TYPED_INTERVAL.findall(text)
            assert not found, f"{nb.name} cell {i} types an interval: {TYPED_INTERVAL.search(text).group(0)}"


def test_typed_interval_pattern_catches_and_spares():
    for typed in ("+0.19 [+0.09, +0.31]", "[−0.010, +0.100]", "(-1.06 to +0.12)", "[0.5, 1.0]"):
        assert TYPED_INTERVAL.search(typed), typed
    for fine in ("$[0, 1]$ range", "weights [1, 0.5]", "lines 1204–1216", "[−1, 1]"):
        assert not TYPED_INTERVAL.search(fine), fine


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_has_at_most_2000_markdown_words(nb):
    words = sum(len("".join(c["source"]).split()) for c in json.loads(nb.read_text())["cells"]
                if c["cell_type"] == "markdown")
    assert words <= 2000, f"{nb.name}: {words} markdown words (the course's budget is 2,000 a notebook)"
