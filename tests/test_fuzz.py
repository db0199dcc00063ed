"""Fuzzing the untrusted-text paths: every public *_reward, the answer parser and the gold parser.

Each function sees the same >= 10,000 generated completions (drawn once per run by hypothesis, derandomized): random text, nested / duplicated /
unclosed / reordered tags, huge, negative, scientific, unicode-digit and fraction numbers, empty and
50k-character strings, and text that looks like code. Every call must return one finite float per
completion, take < 50 ms of CPU time, and never raise. Counts are printed (run with -s to see them).
"""
import ast
import gc
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import data, rewards

EXAMPLES = 10_000
TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<answer", "answer>", "<", ">", "\n"]
NUMBERS = st.one_of(
    st.integers(min_value=-10**40, max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "-1e-308", "1,000,000", "$18.00", "18%", "\\frac{1}{3}", "3/0", "0/0", "١٨",
                     "⅔", "½", "²", "１８", "18.", ".5", "--5", "1e99999", "NaN", "inf", "\\boxed{", "\\sqrt{-1}",
                     "10^{10^{10}}", "9**9**9", "2^{2^{2^{2}}}", "1e308", "\\frac{1}{0}", "9" * 400]),
)
CODE = st.sampled_from(["__import__('os').system('rm -rf /')", "exec('x=1')", "eval('2+2')", "lambda: 0",
                        "{{7*7}}", "${jndi:ldap://x}", "'; DROP TABLE t; --", "\\input{/etc/passwd}",
                        "import this", "\x00\x01\x02", "\uffff"])
PIECE = st.one_of(st.text(max_size=40), st.sampled_from(TAGS), NUMBERS, CODE)
COMPLETION = st.one_of(
    st.lists(PIECE, max_size=25).map("".join),
    st.just(""),
    st.builds(lambda n, c: c * n, st.integers(1, 50_000), st.sampled_from(["9", "<answer>", "a", " ", "\n"])),
    st.builds(lambda x: f"<reasoning>\n{x}\n</reasoning>\n<answer>\n{x}\n</answer>", NUMBERS),
    st.builds(lambda a, b: f"<answer><reasoning>{a}</answer></reasoning><answer>{b}", PIECE, PIECE),
)

# Gold answers come from the dataset (trusted): GSM8K golds are plain integers or decimals.
GOLD = st.one_of(st.integers(min_value=-10**12, max_value=10**12).map(str),
                 st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False).map(str))
PUBLIC_REWARDS = {n: getattr(rewards, n) for n in dir(rewards) if n.endswith("_reward")}
STATS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    """EXAMPLES (completion, gold) pairs drawn once by hypothesis (derandomized: the same pairs on every run) and
    shared by every function under test: drawing them is most of the cost, calling a parser is cheap."""
    pairs: list[tuple[str, str]] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=COMPLETION, gold=GOLD)
    def draw(text, gold):
        pairs.append((text, gold))

    draw()
    assert len(pairs) >= EXAMPLES, f"hypothesis drew {len(pairs)} examples, fewer than {EXAMPLES}"
    return pairs


def _check(name, fn, value_ok, corpus):
    st_ = STATS.setdefault(name, {"calls": 0, "exceptions": 0, "non_finite": 0, "slowest_ms": 0.0})
    for warm in ("<answer>1</answer>", "<answer>\\sqrt{x}</answer>"):  # first-call imports (sympy, the
        fn(warm, "1")  # LaTeX parser of math-verify) are a one-off cost, not a per-call one
    for text, gold in corpus:
        gc.disable()  # a collection of the corpus' garbage is not the function's cost
        t = time.thread_time()  # CPU time of this thread: a loaded machine does not inflate it
        try:
            out = fn(text, gold)
        except Exception as error:
            st_["exceptions"] += 1
            raise AssertionError(f"{name} raised {error!r} on {text[:200]!r} (gold {gold!r})") from error
        finally:
            gc.enable()
            st_["calls"] += 1
            ms = (time.thread_time() - t) * 1000
            if ms > st_["slowest_ms"]:
                st_["slowest_ms"], st_["slowest_input"] = ms, text[:120]
        if not value_ok(out):
            st_["non_finite"] += 1
            raise AssertionError(f"{name} returned {out!r} for {text[:80]!r}")
    print(f"\n{name}: {st_}")
    assert st_["calls"] >= EXAMPLES and st_["exceptions"] == 0 and st_["non_finite"] == 0
    assert st_["slowest_ms"] < 50, f"{name}: slowest call {st_['slowest_ms']:.1f} ms on {st_['slowest_input']!r}"


def _one_finite_float(out):
    return isinstance(out, list) and len(out) == 1 and isinstance(out[0], float) and math.isfinite(out[0])


@pytest.mark.parametrize("name", sorted(PUBLIC_REWARDS))
def test_fuzz_reward(name, corpus):
    f = PUBLIC_REWARDS[name]
    _check(name, lambda text, gold: f(prompts=[None], completions=[text], answer=[gold]), _one_finite_float, corpus)


def test_fuzz_answer_parser(corpus):
    _check("extract_answer", lambda text, gold: data.extract_answer(text),
           lambda out: out is None or isinstance(out, str), corpus)


def test_fuzz_last_number_parser(corpus):
    _check("extract_last_number", lambda text, gold: data.extract_last_number(text),
           lambda out: out is None or isinstance(out, str), corpus)


def test_fuzz_gold_parser(corpus):
    def parse(text, gold):
        try:
            return data.extract_gold(text)
        except ValueError:  # documented: a string without '####' is not a GSM8K solution
            return None

    _check("extract_gold", parse, lambda out: out is None or isinstance(out, str), corpus)


def test_no_reward_path_calls_eval_or_exec():
    """Model output is untrusted: no eval/exec/compile anywhere in helpers/."""
    banned = {"eval", "exec", "compile", "__import__"}
    for path in Path(data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in banned, f"{path.name}:{node.lineno} calls {node.func.id}()"
