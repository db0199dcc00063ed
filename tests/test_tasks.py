"""The task registry (helpers/tasks.py) and the bundled SVAMP copy. Fast: no model."""
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import arith, data, tasks
from helpers.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SVAMP_SHA256 = "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e"


def test_svamp_is_bundled_untouched_with_its_licence():
    folder = tasks.SVAMP_FILE.parent
    assert hashlib.sha256(tasks.SVAMP_FILE.read_bytes()).hexdigest() == SVAMP_SHA256
    assert "MIT License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "arkilpatel/SVAMP" in readme and "untouched" in readme and SVAMP_SHA256 in readme
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"helpers.data_files.svamp" = ["*"]' in pyproject or "data_files/svamp/*" in pyproject  # shipped


def test_svamp_rows_keep_the_integer_answers_in_gsm8k_format():
    raw = json.loads(tasks.SVAMP_FILE.read_text())
    dropped = sum(not float(e["Answer"]).is_integer() for e in raw)
    rows = tasks.load_svamp_rows()
    assert dropped == 0 and len(rows) == 1000 - dropped == len(raw)
    by_id = {e["ID"]: e for e in raw}
    for r in rows:
        e = by_id[r["id"]]
        gold = data.extract_gold(r["answer"])
        assert r["answer"] == f"#### {gold}" and re.fullmatch(r"\d+", gold)
        assert int(gold) == tasks.SVAMP_ERRATA.get(r["id"], int(e["Answer"]))
        assert r["type"] == e["Type"]
        q = r["question"]
        assert q.startswith(e["Body"].strip()) and q.endswith(e["Question"].strip()[1:])
        assert "  " not in q and " ," not in q and (".." not in q or ".." in e["Body"])  # chal-410's body ends ".."
        assert q.endswith("?") or not e["Question"].strip().endswith("?")
    assert tasks.load_svamp_rows(10) == rows[:10]


def test_svamp_equations_match_the_answers_after_the_errata():
    """SVAMP's equation evaluates to its answer in every row (exact fractions: a division may be intermediate)."""
    from fractions import Fraction

    def value(expr):
        tokens = re.findall(r"\d+|[-+*/()]", expr)
        return eval_fraction(tokens)

    def eval_fraction(tokens):  # a tiny shunting-yard over + - * / and parentheses, no eval
        prec, out, ops = {"+": 1, "-": 1, "*": 2, "/": 2}, [], []

        def apply():
            b, a, op = out.pop(), out.pop(), ops.pop()
            out.append(a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b)
        for t in tokens:
            if t.isdigit():
                out.append(Fraction(int(t)))
            elif t == "(":
                ops.append(t)
            elif t == ")":
                while ops[-1] != "(":
                    apply()
                ops.pop()
            else:
                while ops and ops[-1] != "(" and prec[ops[-1]] >= prec[t]:
                    apply()
                ops.append(t)
        while ops:
            apply()
        return out[0]

    for r in tasks.load_svamp_rows():
        assert value(r["equation"]) == int(data.extract_gold(r["answer"])), r


def test_svamp_question_joining():
    assert tasks.svamp_question("Tom has 3 apples.", "How many?") == "Tom has 3 apples. How many?"
    assert tasks.svamp_question("Tom has 3 apples. If he eats 2", "How many are left?") == \
        "Tom has 3 apples. If he eats 2, how many are left?"
    assert tasks.svamp_question("Tom had 3 apples. Then he got 2 more", "How many now?") == \
        "Tom had 3 apples. Then he got 2 more. How many now?"
    assert tasks.svamp_question(" Tom has 3 apples. ", " How many? ") == "Tom has 3 apples. How many?"
    row = next(r for r in tasks.load_svamp_rows() if r["id"] == "chal-1")
    assert row["question"] == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each "
                               "pack, how much do you have to pay to buy each pack?")
    assert row["equation"] == "( 76 - 25 )" and row["answer"] == "#### 51"


def test_gsm8k_task_gives_the_rows_the_pipeline_uses_today():
    from helpers import config, probe

    cfg = config.preset("cpu", dataset_source="bundled", task="gsm8k")
    train, test = data.load_for_run(cfg)
    assert tasks.train_rows("gsm8k", cfg.train_size, "bundled") == train
    assert tasks.eval_rows("gsm8k", cfg.eval_size, "bundled") == test
    assert tasks.GSM8K_PROBE_OFFSET == probe.PROBE_OFFSET
    assert tasks.probe_rows("gsm8k", 100, "bundled") == probe.probe_rows(cfg, 100)
    assert tasks.transfer_rows("gsm8k", 30, "bundled") == test
    with pytest.raises(ConfigError, match="overlaps"):
        tasks.probe_rows("gsm8k", 10, "bundled", offset=10)
    with pytest.raises(ConfigError, match="only"):
        tasks.probe_rows("gsm8k", 400, "bundled")


def test_arith_task_rows_are_the_disjoint_splits():
    s = arith.splits(arith.SEED)
    assert tasks.train_rows("arith") == s["train"] and len(s["train"]) >= 2000
    assert tasks.train_rows("arith", 400) == s["train"][:400]
    assert tasks.eval_rows("arith", 200) == s["eval"][:200]
    probe = tasks.probe_rows("arith", 400)
    assert probe == s["probe"][:400]
    q = {name: {r["question"] for r in rows} for name, rows in
         (("train", tasks.train_rows("arith")), ("eval", tasks.eval_rows("arith")), ("probe", probe))}
    assert not (q["train"] & q["eval"]) and not (q["train"] & q["probe"]) and not (q["eval"] & q["probe"])
    with pytest.raises(ConfigError, match="only"):
        tasks.probe_rows("arith", 10_000)
    assert len(tasks.eval_rows("arith", 10_000)) == 300  # as load_gsm8k_rows: all there are, with a message
    for r in probe[:30] + tasks.train_rows("arith", 30):
        assert set(r) >= {"question", "answer", "level", "template", "equation", "id"}


def test_registry_rejects_unknown_names():
    for f in (tasks.train_rows, tasks.eval_rows, tasks.probe_rows):
        with pytest.raises(ConfigError, match="Unknown task"):
            f("svamp")
    with pytest.raises(ConfigError, match="Unknown transfer"):
        tasks.transfer_rows("arith")
    assert tasks.transfer_rows("svamp", 5) == tasks.load_svamp_rows(5)


def test_tasks_import_no_cycle_and_data_does_not_import_tasks():
    code = ("import json, sys; import helpers.tasks; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('helpers'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout.strip()
    loaded = set(json.loads(out))
    assert {"helpers.arith", "helpers.config", "helpers.data", "helpers.tasks"} <= loaded
    assert not loaded & {f"helpers.{m}" for m in ("training", "evaluation", "probe", "logprob", "rerank", "pipeline",
                                                   "rewards", "steps", "beyond")}
    code = "import sys, helpers.data; print('helpers.tasks' in sys.modules or 'helpers.arith' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout.strip()
    assert out == "False"
