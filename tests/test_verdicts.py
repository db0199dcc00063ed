"""The correctness reward's verdict table: what commits to one value earns 2.0, hedges earn 0.

GRPO finds every loophole: a reward that pays "3 or 18" teaches the policy to hedge. Every class of
surface form below has cases in both directions, so no single rule ("any second number means 0")
can pass it: credited forms must stay credited, hedges must earn nothing.
"""
import pytest

from helpers import data
from helpers.rewards import correctness_reward, single_answer


def wrap(ans: str) -> str:
    return f"<reasoning>\nwork\n</reasoning>\n<answer>\n{ans}\n</answer>"


CREDIT, NONE = 2.0, 0.0
# (class, answer block, gold, verdict)
TABLE = [
    # -- the table: each row gets the verdict in its right-hand column
    ("issue", "3 or 18", "18", NONE),
    ("issue", "either 17 or 18", "18", NONE),
    ("issue", "18\n\n20", "20", NONE),
    ("issue", "1,8", "18", NONE),
    ("issue", "18 is wrong", "18", NONE),
    # -- plain numbers, the forms GSM8K answers take
    ("plain", "18", "18", CREDIT),
    ("plain", "18.0", "18", CREDIT),
    ("plain", "18.00", "18", CREDIT),
    ("plain", "-3", "-3", CREDIT),
    ("plain", "0.5", "0.5", CREDIT),
    ("plain", ".5", "0.5", CREDIT),
    ("plain", "1000", "1000", CREDIT),
    ("plain", "17", "18", NONE),
    ("plain", "180", "18", NONE),
    ("plain", "18.5", "18", NONE),
    ("plain", "3", "-3", NONE),
    # -- currency, units, percent
    ("units", "$18", "18", CREDIT),
    ("units", "$18.00", "18", CREDIT),
    ("units", "\\$18", "18", CREDIT),
    ("units", "18 dollars", "18", CREDIT),
    ("units", "18 eggs", "18", CREDIT),
    ("units", "18 dollars per day", "18", CREDIT),
    ("units", "18%", "18", CREDIT),
    ("units", "$1,250.50", "1250.5", CREDIT),
    ("units", "18 m2", "18", CREDIT),  # the digit glued to a unit word is not a second number
    ("units", "$18 or $20", "18", NONE),
    ("units", "18 to 20 dollars", "18", NONE),
    # -- thousands separators: only valid groups of three
    ("thousands", "1,000", "1000", CREDIT),
    ("thousands", "1,000,000", "1000000", CREDIT),
    ("thousands", "$12,345.67", "12345.67", CREDIT),
    ("thousands", "1,000", "100", NONE),
    ("thousands", "10,00", "1000", NONE),
    ("thousands", "1,0000", "10000", NONE),
    ("thousands", "3,4", "34", NONE),
    # -- x = ..., equations and working: the value after the last "="
    ("equation", "x = 18", "18", CREDIT),
    ("equation", "9 * 2 = 18", "18", CREDIT),
    ("equation", "16 - 3 - 4 = 9 eggs, 9 * 2 = $18", "18", CREDIT),
    ("equation", "Total = 18", "18", CREDIT),
    ("equation", "18 = 18", "18", CREDIT),
    ("equation", "9 * 2 = 18", "9", NONE),
    ("equation", "x = 3 or 18", "18", NONE),
    ("equation", "3 or x = 18", "18", NONE),
    # -- boxed
    ("boxed", "\\boxed{18}", "18", CREDIT),
    ("boxed", "$\\boxed{18}$", "18", CREDIT),
    ("boxed", "The answer is \\boxed{18}.", "18", CREDIT),
    ("boxed", "\\boxed{3} \\boxed{18}", "18", NONE),
    ("boxed", "\\boxed{3 or 18}", "18", NONE),
    # -- ratios, fractions, expressions: one value written with two numbers
    ("ratio", "36/2", "18", CREDIT),
    ("ratio", "1/2", "0.5", CREDIT),
    ("ratio", "\\frac{36}{2}", "18", CREDIT),
    ("ratio", "\\dfrac{1}{2}", "0.5", CREDIT),
    ("ratio", "9 * 2", "18", CREDIT),
    ("ratio", "(16 - 3 - 4) * 2", "18", CREDIT),
    ("ratio", "36/2", "36", NONE),
    ("ratio", "3/0", "18", NONE),
    # -- sentences
    ("sentence", "The answer is 18.", "18", CREDIT),
    ("sentence", "She makes $18 every day.", "18", CREDIT),
    ("sentence", "18 eggs, so 18.", "18", CREDIT),
    ("sentence", "Janet has 18 oranges left.", "18", CREDIT),  # "or" inside a word is no alternative
    ("sentence", "The answer is 18, give or take.", "18", CREDIT),  # one value, however worded
    ("sentence", "In 2 days she makes 36.", "36", NONE),  # two different numbers: not one committed value
    ("sentence", "The answer is 17 and also 18.", "18", NONE),
    # -- alternatives and lists
    ("alternatives", "18 or so", "18", CREDIT),
    ("alternatives", "either way, 18", "18", CREDIT),
    ("alternatives", "18 or 18", "18", CREDIT),
    ("alternatives", "between 17 and 19", "18", NONE),
    ("alternatives", "17-19", "18", NONE),
    ("alternatives", "maybe 18, maybe 20", "18", NONE),
    ("alternatives", "3, 18", "18", NONE),
    ("alternatives", "18; 20", "20", NONE),
    ("alternatives", "possibly 20 or 18", "18", NONE),
    # -- several lines
    ("lines", "18\n18", "18", CREDIT),
    ("lines", "Total:\n18", "18", CREDIT),
    ("lines", "18\n\n20", "18", NONE),
    ("lines", "16 - 3 - 4 = 9\n9 * 2 = 18", "18", NONE),
    # -- denials
    ("denial", "18 notebooks", "18", CREDIT),  # "not" inside a word is no denial
    ("denial", "18 knots", "18", CREDIT),
    ("denial", "18 is wrong", "18", NONE),
    ("denial", "not 18", "18", NONE),
    ("denial", "18 (not 20)", "18", NONE),
    ("denial", "it isn't 20, it's 18", "18", NONE),
    # -- not numbers at all
    ("other", "eighteen", "18", NONE),
    ("other", "", "18", NONE),
    ("other", "__import__('os').system('echo pwned')", "18", NONE),
    ("other", "1" * 500, "18", NONE),
    ("other", "2023-10", "10", NONE),  # a date, not a quantity
]


@pytest.mark.parametrize("cls, answer, gold, verdict", TABLE,
                         ids=[f"{c}:{a[:24]!r}->{g}" for c, a, g, _ in TABLE])
def test_verdict_table(cls, answer, gold, verdict):
    got = correctness_reward(completions=[wrap(answer)], answer=[gold])[0]
    assert got == verdict, f"{cls}: {answer!r} vs gold {gold}: {single_answer(answer)}"


def test_table_is_large_and_every_class_goes_both_ways():
    assert len(TABLE) >= 60
    classes = {c for c, *_ in TABLE} - {"issue", "other"}
    for cls in classes:
        verdicts = {v for c, _, _, v in TABLE if c == cls}
        assert verdicts == {CREDIT, NONE}, f"class {cls!r} needs credited and uncredited cases"


def test_every_bundled_gsm8k_gold_is_credited_in_its_usual_surface_forms():
    """A fix that trades false positives for false negatives is not a fix: real golds keep their credit."""
    golds = [data.extract_gold(r["answer"]) for r in data.load_gsm8k_rows("test", "bundled")]
    forms = ["{g}", "${g}", "{g} dollars", "The answer is {g}.", "x = {g}", "\\boxed{{{g}}}"]
    missed = [(f, g) for g in golds for f in forms
              if correctness_reward(completions=[wrap(f.format(g=g))], answer=[g])[0] != CREDIT]
    assert not missed, missed[:10]
    assert len(golds) > 1000


@pytest.mark.parametrize("text, expected", [
    ("page 3-4", "4"),          # a range: the hyphen is not a minus
    ("2023-10", None),          # a date is not a quantity
    ("on 2023-10-05 she paid 7", "7"),
    ("at 10:30 she had 5", "5"),  # a clock time is not a quantity
    ("she left at 10:30", None),
    ("COVID-19", "19"),         # a hyphenated word
    ("x = -3", "-3"),           # a real minus sign
    ("(-3)", "-3"),
    ("-3 degrees", "-3"),
    ("temperature fell by 5-8 degrees to -2", "-2"),
    ("1,000 apples", "1000"),
    ("answers 3,4", "4"),       # malformed grouping: two numbers, not 34
    ("m2 of floor: 12", "12"),
])
def test_lenient_last_number_reads_text_correctly(text, expected):
    assert data.extract_last_number(text) == expected
