"""Rule-based rewards for the R1-style format `<reasoning>…</reasoning><answer>…</answer>`.

Every public reward has TRL's signature `(prompts, completions, **kwargs) -> list[float]`, returns
one finite float per completion, never raises on any string, and never evaluates model text.
Correctness compares *values*: plain numbers and ratios exactly (`1,000` = `1000`, `$18.00` = `18`,
`36/2` = `18`), everything else with Hugging Face's math-verify (LaTeX, expressions). math-verify's
expression path hands sympy only digits, spaces and `+ - * / ^ ( )` (its own regex), so no names ever
reach sympy's parser; power towers, huge exponents and division by zero are rejected before it.
"""
from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

from .data import (ANSWER_CLOSE, ANSWER_OPEN, REASONING_CLOSE, REASONING_OPEN, completion_text,
                   extract_answer)

logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every unparsable string

MAX_ANSWER_CHARS = 200  # a GSM8K answer is a number; longer "answers" are wrong, and never parsed
FORMAT_REWARD = 0.5
CORRECT_REWARD = 2.0

_STRICT = re.compile(r"\s*<reasoning>\n.*?\n</reasoning>\s*<answer>\n?.*?\n?</answer>\s*", re.DOTALL)
_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
_INTEGER = re.compile(r"-?\d{1,30}")
_NUMBER = re.compile(r"[-+]?(\d[\d,]*(\.\d+)?|\.\d+)")
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


def _tag_counts(text: str) -> tuple[int, int, int, int]:
    return tuple(text.count(t) for t in (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))


def strict_format_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """0.5 when the whole completion is exactly one reasoning block then one answer block, else 0."""
    out = []
    for text in _texts(completions):
        ok = _tag_counts(text) == (1, 1, 1, 1) and _STRICT.fullmatch(text) is not None
        out.append(FORMAT_REWARD if ok else 0.0)
    return out


def soft_format_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """0.5 when a reasoning block is followed by an answer block somewhere in the text, else 0."""
    return [FORMAT_REWARD if _SOFT.search(t) else 0.0 for t in _texts(completions)]


def tag_count_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """0.125 per tag that appears exactly once, minus 0.001 per character after </answer> (at most 0.5 off).

    A dense shaping signal: partial credit while the model is still learning the format.
    """
    out = []
    for text in _texts(completions):
        score = 0.125 * sum(c == 1 for c in _tag_counts(text))
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
def _fraction(text: str) -> Fraction | None:
    """Exact value of the last plain number in `text` ('$1,000.50' -> 2001/2), or None. No evaluation."""
    m = None
    for m in _NUMBER.finditer(text):
        pass
    if m is None:
        return None
    try:
        return Fraction(m.group(0).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


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


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when `predicted` has the same value as `gold`. Never raises, never evaluates text."""
    if predicted is None or not isinstance(gold, str):
        return False
    predicted = predicted.strip()
    if not predicted or len(predicted) > MAX_ANSWER_CHARS:
        return False
    boxed = _BOXED.findall(predicted)  # "\\boxed{18}" -> "18": the boxed part is the answer
    if boxed:
        predicted = boxed[-1].strip()
    value, gold_value = _exact_value(predicted), _exact_value(gold.strip())
    if value is not None and gold_value is not None:
        return value == gold_value
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
    a, b = _fraction(predicted), _fraction(gold)
    return a is not None and a == b


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


def reward_table(completions: list[str], answer: list[str], funcs=None):
    """DataFrame: one row per completion, one column per reward (for showing rewards on examples)."""
    import pandas as pd

    funcs = funcs or RULE_REWARD_FUNCS
    cols = {name: f(prompts=None, completions=completions, answer=answer) for name, f in funcs.items()}
    return pd.DataFrame({"completion": completions, "gold": answer, **cols})
