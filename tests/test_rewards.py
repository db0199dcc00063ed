import math

import pytest

from helpers import rewards
from helpers.rewards import (correctness_reward, integer_answer_reward, soft_format_reward,
                             strict_format_reward, tag_count_reward)

GOOD = "<reasoning>\n16 - 3 - 4 = 9; 9 * 2 = 18\n</reasoning>\n<answer>\n18\n</answer>"


def wrap(ans: str) -> str:
    return f"<reasoning>\nwork\n</reasoning>\n<answer>\n{ans}\n</answer>"


# Tricky answer strings and the correctness reward each must get against the gold answer.
TRICKY = [
    ("18", "18", 2.0),
    ("18.0", "18", 2.0),
    ("$18.00", "18", 2.0),
    ("$18", "18", 2.0),
    ("18 dollars", "18", 2.0),
    ("1,000", "1000", 2.0),
    ("1000", "1000", 2.0),
    ("\\frac{36}{2}", "18", 2.0),
    ("36/2", "18", 2.0),
    ("\\boxed{18}", "18", 2.0),
    ("x = 18", "18", 2.0),
    ("-3", "-3", 2.0),
    ("0.5", "0.5", 2.0),
    ("1/2", "0.5", 2.0),
    ("17", "18", 0.0),
    ("18.5", "18", 0.0),
    ("180", "18", 0.0),
    ("1,000", "100", 0.0),
    ("eighteen", "18", 0.0),
    ("", "18", 0.0),
    ("__import__('os').system('echo pwned')", "18", 0.0),
    ("1" * 500, "18", 0.0),
]


@pytest.mark.parametrize("answer, gold, expected", TRICKY)
def test_correctness_compares_values(answer, gold, expected):
    assert correctness_reward(completions=[wrap(answer)], answer=[gold]) == [expected]


def test_correctness_needs_the_answer_tags():
    assert correctness_reward(completions=["The answer is 18."], answer=["18"]) == [0.0]
    assert correctness_reward(completions=["<answer>18"], answer=["18"]) == [0.0]


def test_correctness_accepts_conversational_completions():
    comp = [[{"role": "assistant", "content": GOOD}]]
    assert correctness_reward(prompts=[[]], completions=comp, answer=["18"]) == [2.0]


def test_correctness_with_mismatched_answer_column_is_defined():
    assert correctness_reward(completions=[GOOD, GOOD], answer=["18"]) == [2.0, 0.0]


def test_fraction_fallback_outside_the_main_thread():
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.update(r=correctness_reward(
        completions=[wrap("$1,000.00"), wrap("999")], answer=["1000", "1000"])))
    t.start()
    t.join()
    assert out["r"] == [2.0, 0.0]


@pytest.mark.parametrize("text, strict, soft", [
    (GOOD, 0.5, 0.5),
    ("<reasoning>r</reasoning><answer>18</answer>", 0.0, 0.5),        # no newlines: soft only
    ("<reasoning>\nr\n</reasoning>\n<answer>\n18\n</answer> trailing", 0.0, 0.5),
    ("<answer>\n18\n</answer>\n<reasoning>\nr\n</reasoning>", 0.0, 0.0),  # reordered
    ("<reasoning>\n<reasoning>\nr\n</reasoning>\n</reasoning>\n<answer>\n1\n</answer>", 0.0, 0.5),  # nested
    ("<reasoning>\nr\n</reasoning>\n<answer>\n1", 0.0, 0.0),          # unclosed answer
    ("", 0.0, 0.0),
])
def test_format_rewards(text, strict, soft):
    assert strict_format_reward(completions=[text]) == [strict]
    assert soft_format_reward(completions=[text]) == [soft]


def test_tag_count_reward_partial_credit_and_trailing_penalty():
    assert tag_count_reward(completions=[GOOD]) == [0.5]
    assert tag_count_reward(completions=["<reasoning> only"]) == [0.125]
    assert tag_count_reward(completions=["<answer>1</answer><answer>2</answer>"]) == [0.0]
    assert tag_count_reward(completions=[GOOD + "x" * 100]) == [pytest.approx(0.4)]
    assert tag_count_reward(completions=[GOOD + "x" * 10_000]) == [0.0]  # penalty capped at 0.5


def test_integer_answer_reward():
    assert integer_answer_reward(completions=[wrap("18"), wrap("-3"), wrap("18.5"), wrap("$18"), "none"]) == \
        [0.5, 0.5, 0.0, 0.0, 0.0]


def test_every_public_reward_has_trl_signature_and_returns_finite_floats():
    funcs = [getattr(rewards, n) for n in dir(rewards) if n.endswith("_reward")]
    assert len(funcs) == 5
    completions = [GOOD, "", "<answer>", "\x00\uffff", "<reasoning>" * 1000, "9" * 50_000]
    for f in funcs:
        out = f(prompts=[None] * len(completions), completions=completions, answer=["18"] * len(completions),
                completion_ids=[[1]] * len(completions))
        assert len(out) == len(completions)
        assert all(isinstance(v, float) and math.isfinite(v) for v in out), f.__name__


def test_reward_table_shows_each_reward():
    df = rewards.reward_table([GOOD, "18"], ["18", "18"])
    assert list(df["correctness_reward"]) == [2.0, 0.0]
    assert set(rewards.RULE_REWARD_FUNCS) <= set(df.columns)


@pytest.mark.parametrize("answer", ["9**9**9", "10^{10^{10}}", "2^{2^{2^{2}}}", "1e99999", "3/0", "\\frac{1}{0}",
                                    "1e308"])
def test_pathological_answers_are_wrong_not_slow(answer):
    """Power towers, huge exponents and division by zero never reach sympy (they could take seconds there)."""
    assert correctness_reward(completions=[wrap(answer)], answer=["18"]) == [0.0]
