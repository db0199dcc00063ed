import json

import pytest

from helpers import data
from helpers.config import ConfigError


@pytest.mark.parametrize("solution, gold", [
    ("Janet sells 9 eggs.\n#### 18", "18"),
    ("...\n#### 1,000", "1000"),
    ("#### -3", "-3"),
    ("a #### b\n#### 42", "42"),          # the last marker wins
    ("x\n####   7  \n", "7"),
])
def test_extract_gold(solution, gold):
    assert data.extract_gold(solution) == gold


def test_extract_gold_rejects_non_solutions():
    with pytest.raises(ValueError, match="####"):
        data.extract_gold("no marker here")


@pytest.mark.parametrize("text, expected", [
    ("<reasoning>r</reasoning><answer>18</answer>", "18"),
    ("<answer>\n 18 \n</answer>", "18"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),        # last closed pair
    ("<answer>18", None),                                        # unclosed
    ("18</answer>", None),                                       # no opening tag
    ("</answer><answer>", None),                                 # reversed
    ("<answer></answer>", ""),
    ("", None),
    (None, None),
    ("<answer><answer>5</answer>", "5"),                         # nested opening: innermost
])
def test_extract_answer(text, expected):
    assert data.extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("so the total is 1,000 dollars", "1000"),
    ("it costs $18.50.", "18.50"),
    ("-4 degrees", "-4"),
    ("no digits", None),
    ("3 apples and 5 pears", "5"),
])
def test_extract_last_number(text, expected):
    assert data.extract_last_number(text) == expected


def test_split_reasoning():
    assert data.split_reasoning("<reasoning>a</reasoning>\n<answer>5</answer>") == ("<reasoning>a</reasoning>\n", True)
    assert data.split_reasoning("just text") == ("just text", False)


def test_completion_text_handles_trl_formats():
    assert data.completion_text("plain") == "plain"
    assert data.completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    assert data.completion_text([]) == ""
    assert data.completion_text(None) == ""


def test_format_solution_is_in_tag_format_and_rewarded():
    from helpers import rewards

    sol = data.format_solution("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7")
    assert "<<" not in sol and sol.startswith("<reasoning>")
    assert data.extract_answer(sol) == "7"
    assert rewards.strict_format_reward(completions=[sol]) == [0.5]
    assert rewards.correctness_reward(completions=[sol], answer=["7"]) == [2.0]


def test_bundled_data_is_complete_with_notice():
    test = data.load_gsm8k_rows("test", "bundled")
    train = data.load_gsm8k_rows("train", "bundled")
    assert len(test) == 1319 and len(train) >= 1000
    assert all(data.extract_gold(r["answer"]) for r in test)
    assert "MIT" in (data.BUNDLED_DIR / "LICENSE").read_text()
    assert "grade-school-math" in (data.BUNDLED_DIR / "README.md").read_text()


def test_prompt_is_chat_format_with_system_prompt():
    p = data.make_prompt("What is 2+2?")
    assert [m["role"] for m in p] == ["system", "user"] and "<answer>" in p[0]["content"]


def test_grpo_dataset_columns():
    ds = data.grpo_dataset(data.load_gsm8k_rows("test", "bundled", n=3))
    assert set(ds.column_names) >= {"prompt", "answer"} and ds[0]["answer"] == "18"


def test_missing_or_corrupt_data_file_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "BUNDLED_DIR", tmp_path)
    with pytest.raises(ConfigError, match="missing"):
        data.load_gsm8k_rows("test", "bundled")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{broken\n")
    with pytest.raises(ConfigError, match="test.jsonl:2"):
        data.load_gsm8k_rows("test", "bundled")


def test_unknown_split_and_source():
    with pytest.raises(ConfigError, match="split"):
        data.load_gsm8k_rows("validation", "bundled")
    with pytest.raises(ConfigError, match="dataset_source"):
        data.load_gsm8k_rows("test", "s3")


def test_pass_at_k_and_auroc():
    from helpers.evaluation import auroc, pass_at_k

    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.2], [True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([1.0, 2.0], [False, False]) != auroc([1.0, 2.0], [False, False])  # NaN: one class empty
