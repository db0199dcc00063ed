"""Rule-based rewards for the R1-style format `<reasoning>…</reasoning><answer>…</answer>` (or, with
tag_style="think", `<think>…</think><answer>…</answer>`: see `rule_reward_funcs`).

Every public reward has TRL's signature `(prompts, completions, **kwargs) -> list[float]`, returns
one finite float per completion, never raises on any string, and never evaluates model text.
Correctness credits an answer block only when it commits to ONE value (`single_answer`), then compares
*values*: plain numbers and ratios exactly (`1,000` = `1000`, `$18.00` = `18`, `36/2` = `18`), LaTeX and
arithmetic expressions with Hugging Face's math-verify. What commits to one value:
- a single number, with currency, unit words, a percent sign, `x = …`, `\boxed{…}`, or in a short sentence
  ("The answer is 18."); the same number repeated ("18 eggs, so 18");
- an equation or working line: the value after its last `=` ("9 * 2 = 18");
- a ratio or fraction (`36/2`, `\frac{1}{2}`), or an arithmetic expression (`9 * 2`).
What does not (reward 0, whatever the gold): two or more different numbers ("3 or 18", "either 17 or
18", "between 17 and 19", "3, 18", a range "17-19"), several lines with different numbers ("18\n\n20"),
several different `\boxed{}`, alternatives written before an `=` ("3 or x = 18"), a denial ("18 is
wrong", "not 18", "isn't"), or a malformed number ("1,8": thousands separators only in groups of three).
A GRPO policy finds every loophole in a reward: a hedge that pays is a hedge it will learn.
math-verify's
expression path hands sympy only digits, spaces and `+ - * / ^ ( )` (its own regex), so no names ever
reach sympy's parser; power towers, huge exponents and division by zero are rejected before it.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

from .data import ANSWER_CLOSE, ANSWER_OPEN, completion_text, extract_answer, reasoning_tags, scan_numbers

logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every unparsable string

MAX_ANSWER_CHARS = 200  # a GSM8K answer is a number; longer "answers" are wrong, and never parsed
FORMAT_REWARD = 0.5
CORRECT_REWARD = 2.0


@lru_cache(maxsize=None)
def _format_patterns(tag_style: str) -> tuple[re.Pattern, re.Pattern]:
    """(strict, soft) format patterns of `tag_style` (reasoning block tags; the answer block is the same)."""
    o, c = (re.escape(t) for t in reasoning_tags(tag_style))
    a, z = re.escape(ANSWER_OPEN), re.escape(ANSWER_CLOSE)
    return (re.compile(rf"\s*{o}\n.*?\n{c}\s*{a}\n?.*?\n?{z}\s*", re.DOTALL),
            re.compile(rf"{o}.*?{c}\s*{a}.*?{z}", re.DOTALL))


_INTEGER = re.compile(r"-?\d{1,30}")
# "18", "-3", "$1,000.00", "18 dollars", "18%": a plain number with an optional currency sign or unit word.
_PLAIN = re.compile(
    r"\$?\s*([-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,2})?)\s*(?:%|[A-Za-z][A-Za-z ]{0,30})?\.?")
_RATIO = re.compile(r"(?:\\d?frac\{\s*([-+]?\d{1,12})\s*\}\{\s*(\d{1,12})\s*\}|([-+]?\d{1,12})\s*/\s*(\d{1,12}))")
_LAST_FRAC = re.compile(r"\\d?frac\{\s*([-+]?\d{1,12})\s*\}\{\s*(\d{1,12})\s*\}\s*\$?\.?$")
_HUGE_EXPONENT = re.compile(r"\d[eE][-+]?\d{3,}")
_POWER = re.compile(r"\^|\*\*")
_BOXED = re.compile(r"\\boxed\{([^{}]{1,60})\}")
_RATIO_BY_ZERO = re.compile(r"/\s*0+(?![\d.])|\\d?frac\{[^{}]*\}\{\s*0+\s*\}")


def _texts(completions) -> list[str]:
    return [completion_text(c) for c in completions]


def _tag_counts(text: str, tag_style: str = "reasoning") -> tuple[int, int, int, int]:
    return tuple(text.count(t) for t in (*reasoning_tags(tag_style), ANSWER_OPEN, ANSWER_CLOSE))


# The three format rewards take `tag_style` ("reasoning": <reasoning>…</reasoning>, "think": <think>…</think>);
# TRL calls them without it, so a run in another style passes rule_reward_funcs(style) to the trainer.
def strict_format_reward(prompts=None, completions=(), tag_style: str = "reasoning", **kwargs) -> list[float]:
    """0.5 when the whole completion is exactly one reasoning block then one answer block, else 0."""
    strict, _ = _format_patterns(tag_style)
    out = []
    for text in _texts(completions):
        ok = _tag_counts(text, tag_style) == (1, 1, 1, 1) and strict.fullmatch(text) is not None
        out.append(FORMAT_REWARD if ok else 0.0)
    return out


def soft_format_reward(prompts=None, completions=(), tag_style: str = "reasoning", **kwargs) -> list[float]:
    """0.5 when a reasoning block is followed by an answer block somewhere in the text, else 0."""
    _, soft = _format_patterns(tag_style)
    return [FORMAT_REWARD if soft.search(t) else 0.0 for t in _texts(completions)]


def tag_count_reward(prompts=None, completions=(), tag_style: str = "reasoning", **kwargs) -> list[float]:
    """0.125 per tag that appears exactly once, minus 0.001 per character after </answer> (at most 0.5 off).

    A dense shaping signal: partial credit while the model is still learning the format.
    """
    out = []
    for text in _texts(completions):
        score = 0.125 * sum(c == 1 for c in _tag_counts(text, tag_style))
        end = text.rfind(ANSWER_CLOSE)
        if end >= 0:
            trailing = len(text) - end - len(ANSWER_CLOSE)
            score -= min(0.001 * trailing, 0.5)
        out.append(float(score))
    return out


def integer_answer_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """0.5 when the tagged answer is a plain integer (GSM8K answers are), else 0."""
    out = []
    for text in _texts(completions):
        ans = extract_answer(text)
        out.append(FORMAT_REWARD if ans is not None and _INTEGER.fullmatch(ans) else 0.0)
    return out


# ---------------------------------------------------------------------------------------
# Value comparison
@lru_cache(maxsize=4096)
def _parse_gold(gold: str):
    from math_verify import ExprExtractionConfig, parse

    return parse(gold, extraction_config=[ExprExtractionConfig()])


def _exact_value(text: str) -> Fraction | None:
    """The value of a plain number ('$1,000.00', '18 dollars', '18%' -> 18) or a ratio ('36/2'), else None.

    Most answers take this path; math-verify (sympy) is kept for LaTeX and expressions, where it is needed.
    """
    m = _PLAIN.fullmatch(text)
    if m:
        try:
            return Fraction(m.group(1).replace(",", "").rstrip("."))
        except (ValueError, ZeroDivisionError):
            return None
    m = _RATIO.fullmatch(text)  # "36/2", "\\frac{36}{2}"
    if m:
        num, den = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    else:
        m = _LAST_FRAC.search(text)  # "so x = \\frac{36}{2}"
        if m is None:
            return None
        num, den = m.group(1), m.group(2)
    return Fraction(int(num), int(den)) if int(den) != 0 else None


_DENIAL = re.compile(r"\b(?:not|no|never|wrong|incorrect|false|isn't|wasn't|aren't|doesn't|don't|can't)\b|n't\b",
                     re.IGNORECASE)
_ALTERNATIVE = re.compile(r"\b(?:or|either|between|maybe|perhaps|possibly)\b", re.IGNORECASE)
_RANGE = re.compile(r"\$?\d[\d,.]*\s?[-\u2013]\s?\$?\d[\d,.]*(?:\s+[A-Za-z]+)*")  # "17-19", "$3-$4 each"
_EXPRESSION = re.compile(r"[\d\s.,+\-*/×÷^()\u2212]+")
_OPERATOR_BETWEEN = re.compile(r"\d\s*[+*×÷^\-\u2212]\s*[\d(]")
_FRAC = re.compile(r"\\[dt]?frac\{\s*([-+]?\d{1,12})\s*\}\{\s*(\d{1,12})\s*\}")
_RATIO_TEXT = re.compile(r"(?<![\d.,])([-\u2212]?\d{1,12})\s*/\s*(\d{1,12})(?![\d.,])")


def single_answer(text: str | None) -> tuple[str, object]:
    """What an answer block commits to: ("value", Fraction), ("expr", text for math-verify), or
    ("none", reason) when it determines no single value (see the module docstring). Never raises."""
    if not isinstance(text, str):
        return "none", "no answer"
    t = text.strip()
    if not t or len(t) > MAX_ANSWER_CHARS:
        return "none", "empty or too long"
    if _DENIAL.search(t):
        return "none", "denial"
    boxed = [b.strip() for b in _BOXED.findall(t)]
    if boxed:
        if len(set(boxed)) > 1:
            return "none", "several boxed answers"
        t = boxed[-1]
    lines = [line for line in t.splitlines() if any(ch.isdigit() for ch in line)]
    if len(lines) > 1:
        verdicts = [single_answer(line) for line in lines]
        kinds = {k for k, _ in verdicts}
        if kinds == {"value"} and len({v for _, v in verdicts}) == 1:
            return verdicts[-1]
        return "none", "several lines with different answers"
    for sign in ("=", "\u2248"):  # "9 * 2 = 18", "x = 18", "≈ 18": the value after the last one
        if sign in t:
            left, t = t.rsplit(sign, 1)
            if _ALTERNATIVE.search(left):
                return "none", "alternatives before '='"
    t = t.strip().rstrip(".").strip()
    t = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", t)
    numbers = scan_numbers(t, limit=MAX_ANSWER_CHARS)
    if any(n.malformed for n in numbers):
        return "none", "malformed number"
    if not numbers:
        return ("expr", t) if "\\" in t else ("none", "no number")
    if _RANGE.fullmatch(t):
        return "none", "a range"
    if len(numbers) > 1 and _EXPRESSION.fullmatch(t) and _OPERATOR_BETWEEN.search(t):
        return "expr", t  # "9 * 2", "(16 - 3 - 4) * 2": one value, checked by math-verify
    values = {n.value for n in numbers}
    ratios = list(_RATIO_TEXT.finditer(t))
    if len(ratios) == 1 and len(numbers) == 2:  # "36/2", "1/2 cup"
        num, den = int(ratios[0].group(1).replace("\u2212", "-")), int(ratios[0].group(2))
        return ("value", Fraction(num, den)) if den else ("none", "division by zero")
    if len(values) == 1:
        return "value", numbers[-1].value
    return "none", "several different numbers"


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when `predicted` commits to one value and it equals `gold`'s. Never raises, never evaluates text."""
    if predicted is None or not isinstance(gold, str):
        return False
    kind, what = single_answer(predicted)
    if kind == "none":
        return False
    gold_value = _exact_value(gold.strip())
    if kind == "value":
        return gold_value is not None and what == gold_value
    return _verify_expression(str(what), gold)


def _verify_expression(predicted: str, gold: str) -> bool:
    """math-verify on a LaTeX or arithmetic answer, after the guards against towers, huge exponents and x/0."""
    if (len(_POWER.findall(predicted)) > 1 or re.search(r"(\^|\*\*)\s*\{?\s*-?\d{3,}", predicted)
            or _HUGE_EXPONENT.search(predicted) or _RATIO_BY_ZERO.search(predicted)):
        return False  # towers, huge exponents, x/0: sympy would spend seconds; never a GSM8K answer
    if threading.current_thread() is threading.main_thread():
        try:  # math-verify uses SIGALRM for its timeouts, which only works in the main thread
            from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

            # LaTeX parsing (antlr) is the slow part: only strings with a LaTeX command go through it.
            configs = [LatexExtractionConfig(), ExprExtractionConfig()] if "\\" in predicted else [ExprExtractionConfig()]
            parsed = parse(predicted, extraction_config=configs, parsing_timeout=2)
            if parsed:
                return bool(verify(_parse_gold(gold), parsed, timeout_seconds=2))
        except Exception:  # noqa: BLE001 - any failure of the verifier is "not verified", never a crash
            pass
    return False


def correctness_reward(prompts=None, completions=(), answer=(), **kwargs) -> list[float]:
    """2.0 when the tagged answer equals the gold answer in value, else 0. `answer` is the dataset column."""
    texts = _texts(completions)
    golds = list(answer) if answer is not None else []
    if len(golds) != len(texts):  # a defined reward, not a crash mid-training
        golds = (golds + [""] * len(texts))[: len(texts)]
    return [CORRECT_REWARD if answers_match(extract_answer(t), str(g)) else 0.0 for t, g in zip(texts, golds)]


RULE_REWARD_FUNCS = {
    f.__name__: f
    for f in (strict_format_reward, soft_format_reward, tag_count_reward, integer_answer_reward, correctness_reward)
}
_STYLED = (strict_format_reward, soft_format_reward, tag_count_reward)


def rule_reward_funcs(tag_style: str = "reasoning") -> dict:
    """RULE_REWARD_FUNCS for `tag_style`: the same names (TRL logs rewards/<name>/mean, reward_weights use them),
    with the format rewards bound to that style's reasoning tags."""
    reasoning_tags(tag_style)  # ConfigError for an unknown style, before training starts
    if tag_style == "reasoning":
        return dict(RULE_REWARD_FUNCS)

    def bind(f):
        @functools.wraps(f)
        def styled(prompts=None, completions=(), **kwargs):
            kwargs.pop("tag_style", None)
            return f(prompts, completions, tag_style=tag_style, **kwargs)
        return styled

    return {name: bind(f) if f in _STYLED else f for name, f in RULE_REWARD_FUNCS.items()}


def reward_table(completions: list[str], answer: list[str], funcs=None, tag_style: str = "reasoning"):
    """DataFrame: one row per completion, one column per reward (for showing rewards on examples)."""
    import pandas as pd

    funcs = funcs or rule_reward_funcs(tag_style)
    cols = {name: f(prompts=None, completions=completions, answer=answer) for name, f in funcs.items()}
    return pd.DataFrame({"completion": completions, "gold": answer, **cols})
