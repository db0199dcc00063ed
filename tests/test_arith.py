"""Generated arithmetic word problems (helpers/arith.py): answers, wording, levels, splits, determinism, and the
safe evaluator. Fast: no model."""
import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers import arith, data, rewards

ROOT = Path(__file__).resolve().parents[1]
N_PER = 40  # problems per (template, level) in the per-template checks


def rows_by_template_and_level():
    for level in arith.LEVELS:
        for template in sorted(arith.TEMPLATES):
            yield level, template, arith.generate(N_PER, level, seed=7, templates=(template,))


ALL = [r for _, _, rows in rows_by_template_and_level() for r in rows]
ANNOTATION = re.compile(r"<<([^=<>]+)=(\d+)>>(\d+)")


def test_there_are_enough_distinct_templates():
    assert len(arith.TEMPLATES) >= 8
    assert {r["template"] for r in ALL} == set(arith.TEMPLATES)
    assert len({len(t["items"]) for t in arith.TEMPLATES.values()}) > 1  # varied objects and units


@pytest.mark.parametrize("level", arith.LEVELS)
def test_every_template_answer_is_its_equation_and_the_gold(level):
    for template in sorted(arith.TEMPLATES):
        rows = arith.generate(N_PER, level, seed=7, templates=(template,))
        assert len(rows) == N_PER and all(r["template"] == template and r["level"] == level for r in rows)
        for r in rows:
            value = arith.safe_eval(r["equation"])
            after = r["answer"].rsplit("####", 1)[1].strip()
            assert after == str(value) == data.extract_gold(r["answer"]), r
            assert isinstance(value, int) and value > 0, r


def test_the_calculator_annotations_are_right_and_the_last_reaches_the_answer():
    for r in ALL:
        body, final = r["answer"].rsplit("\n#### ", 1)
        lines = body.split("\n")
        assert len(lines) == r["level"]  # one worked line per operation
        for line in lines:
            (expr, result, shown), = ANNOTATION.findall(line)  # exactly one annotation per line
            assert arith.safe_eval(expr) == int(result) == int(shown), line
        assert ANNOTATION.findall(lines[-1])[0][1] == final == data.extract_gold(r["answer"])


def test_intermediate_values_are_positive_integers():
    for r in ALL:
        for expr, result, _ in ANNOTATION.findall(r["answer"]):
            assert int(result) > 0
            assert "/" not in expr or arith.safe_eval(expr) * int(expr.split("/")[1]) == int(expr.split("/")[0])


def test_levels_have_one_two_three_operations():
    for r in ALL:
        tree = ast.parse(r["equation"], mode="eval")
        assert sum(isinstance(n, ast.BinOp) for n in ast.walk(tree)) == r["level"] == arith.count_ops(r["equation"])
        assert len(r["ops"].split(",")) == r["level"]


def test_level_one_numbers_are_small():
    for r in (r for r in ALL if r["level"] == 1):
        a, b = arith.equation_numbers(r["equation"])
        if r["ops"] in ("add", "sub"):
            assert a <= 40 and b <= 40, r
        elif r["ops"] == "mul":
            assert 2 <= a <= 9 and 2 <= b <= 9, r
        else:  # div: divisor and quotient 2-9
            assert 2 <= b <= 9 and 2 <= a // b <= 9, r


def test_the_question_has_exactly_the_numbers_of_the_equation():
    """Every number of the equation is in the text and no other number is: one reading, no distractor."""
    for r in ALL:
        in_text = sorted(int(n.value) for n in data.scan_numbers(r["question"]))
        assert in_text == sorted(arith.equation_numbers(r["equation"])), r
        assert r["question"].rstrip().endswith("?") and r["question"].count("?") == 1
        assert "{" not in r["question"] and "}" not in r["question"] and "  " not in r["question"]


def test_no_sentence_repeats_within_a_problem_where_the_template_has_alternatives():
    for r in ALL:
        t, ops = arith.TEMPLATES[r["template"]], Counter(r["ops"].split(","))
        if all(ops[k] <= len(t[k]) for k in ("add", "sub")):
            masked = [re.sub(r"\d+", "N", s) for s in re.split(r"(?<=[.?])\s+", r["question"])]
            assert len(masked) == len(set(masked)), r["question"]


def test_format_solution_is_well_formed_and_strictly_rewarded():
    for r in ALL[::7]:
        gold = data.extract_gold(r["answer"])
        for style in ("reasoning", "think"):
            text = data.format_solution(r["answer"], style)
            open_, close = data.reasoning_tags(style)
            assert text.startswith(f"{open_}\n") and f"\n{close}\n<answer>\n{gold}\n</answer>" in text
            assert "<<" not in text and ">>" not in text and "####" not in text
            assert rewards.rule_reward_funcs(style)["strict_format_reward"](completions=[text]) == [0.5]
            assert data.extract_answer(text) == gold
            assert rewards.correctness_reward(completions=[text], answer=[gold]) == [2.0]


def test_generate_is_deterministic_distinct_and_checked():
    a, b = arith.generate(50, 2, seed=3), arith.generate(50, 2, seed=3)
    assert a == b
    assert a != arith.generate(50, 2, seed=4)
    assert len({arith.canonical_key(r["question"]) for r in a}) == 50
    assert len({r["id"] for r in a}) == 50
    assert arith.generate(10, 1, seed=3) == arith.generate(30, 1, seed=3)[:10]  # a prefix does not depend on n
    with pytest.raises(ValueError, match="level"):
        arith.generate(3, 4)
    with pytest.raises(ValueError, match="template"):
        arith.generate(3, 1, templates=("nope",))


def test_splits_are_disjoint_sized_and_mixed():
    s = arith.splits()
    assert {k: len(v) for k, v in s.items()} == {"train": 3000, "eval": 300, "probe": 450}
    keys = {k: [arith.canonical_key(r["question"]) for r in v] for k, v in s.items()}
    for k, v in keys.items():
        assert len(v) == len(set(v)), k  # no duplicate question within a split
    assert not set(keys["train"]) & set(keys["eval"])
    assert not set(keys["train"]) & set(keys["probe"])
    assert not set(keys["eval"]) & set(keys["probe"])
    ids = [r["id"] for v in s.values() for r in v]
    assert len(ids) == len(set(ids))
    assert [r["level"] for r in s["probe"][:6]] == [1, 2, 3, 1, 2, 3]
    assert Counter(r["level"] for r in s["eval"][:200]) == {1: 67, 2: 67, 3: 66}
    assert Counter(r["level"] for r in s["train"][:400]) == {1: 160, 2: 160, 3: 80}
    assert Counter(r["level"] for r in s["train"]) == arith.TRAIN_PER_LEVEL
    assert {r["split"] for r in s["probe"]} == {"probe"}
    # fresh copies: a caller's change does not reach the next call
    s["train"][0]["question"] = "changed"
    assert arith.splits()["train"][0]["question"] != "changed"
    assert arith.splits() == arith.splits()


HASH_SCRIPT = ("import hashlib, json; from helpers import arith; "
               "s = arith.splits(); g = [arith.generate(20, l, seed=11) for l in arith.LEVELS]; "
               "print(hashlib.sha256(json.dumps([s, g], sort_keys=True).encode()).hexdigest())")


def test_rows_do_not_depend_on_the_hash_seed():
    here = hashlib.sha256(json.dumps([arith.splits(), [arith.generate(20, lv, seed=11) for lv in arith.LEVELS]],
                                     sort_keys=True).encode()).hexdigest()
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", HASH_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120, check=True).stdout.strip()
        assert out == here


# ---------------------------------------------------------------------------------------
# The safe evaluator
@pytest.mark.parametrize("expr, value", [
    ("12 + 7", 19), ("(12 + 7) * 3", 57), ("40 - 29", 11), ("35 / 5", 7), ("17 // 5", 3), ("(6 * 7 + 4) / 2", 23),
    ("((((1))))", 1), ("(" * 50 + "1" + ")" * 50, 1), (" 3*4 ", 12), ("0 - 5", -5), ("7", 7),
])
def test_safe_eval_accepts_integer_arithmetic(expr, value):
    assert arith.safe_eval(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os')", "__import__('os').system('echo hi')", "os.system('ls')", "open('/etc/passwd')",
    "x + 1", "abs(-3)", "(1).__class__", "[1, 2][0]", "2 ** 10", "2 ** 2 ** 100", "pow(2, 3)", "-3", "+3",
    "1.5 + 2", "1e3", "'a' * 3", "True + 1", "lambda: 1", "1 if 1 else 2", "1 < 2", "1 and 2", "7 / 2", "5 / 0",
    "5 // 0", "5 % 2", "1 << 40", "9" * 13, "999999 * 999999 * 999999", "1 +", "", "(" * 20 + "1" + "+1)" * 20,
    "+".join(["1"] * 40), "1" * 300, "1; 2", "a = 1", "{1: 2}", "f'{1}'", "...", "b'1'", "1j",
])
def test_safe_eval_rejects_everything_else(expr):
    with pytest.raises(arith.UnsafeExpression):
        arith.safe_eval(expr)


def test_safe_eval_rejects_non_strings_and_is_a_value_error():
    for bad in (None, 12, b"1+1", ["1"]):
        with pytest.raises(ValueError):
            arith.safe_eval(bad)


def test_arith_imports_nothing_heavy():
    code = ("import sys, helpers.arith, helpers.tasks; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'pandas', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout.strip()
    assert out == "[]"
