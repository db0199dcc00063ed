"""Notebook 05, part 4: inject one error into a GSM8K reference solution, then find the first wrong step.

A *step* is one non-empty line of the reference reasoning (the text before "####", calculator annotations
<<…>> removed, each line stripped). Steps are indexed from 0.

Per-step scores (one float per step; each predicts the first wrong step as its argmin, ties to the earliest step):
- "implicit":     the per-step implicit reward, sum over the step's tokens of log pi_SFT - log pi_ref (rerank.py);
- "logprob_drop": mean token log-prob of the step minus that of the steps before it (step 0: minus that of the
                  whole reasoning), under the model: the step the model finds suddenly unlikely;
- "trace":        the change of log P(gold | prompt, reasoning so far) across the step (the trace probe of
                  notebook 02, `evaluation.trace_probe`): the step after which the gold answer falls most.
Tokens are mapped to steps by character offsets: the reasoning "step0\\nstep1\\n…\\n" is scored once, jointly with its
context (as `logprob.encode_pair`), and each token belongs to the step holding its first character (a token that
starts in the context belongs to step 0). Every target token belongs to exactly one step, so the per-step sums add
up to the score of the whole reasoning.
"""
from __future__ import annotations

import ast
import bisect
import html
import math
import random
import re
from fractions import Fraction
from typing import Sequence

from ..data import extract_gold, reasoning_tags, scan_numbers

CALC = re.compile(r"<<([^>]*)>>")
NUMBER_SPAN = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
SCORE_NAMES = ("implicit", "logprob_drop", "trace")


# ---------------------------------------------------------------------------------------
# Steps and numbers
def raw_steps(gsm8k_answer: str) -> list[str]:
    """The reference reasoning's non-empty lines, stripped, calculator annotations kept. ValueError without '####'."""
    extract_gold(gsm8k_answer)  # the same check and message as everywhere else
    lines = gsm8k_answer.rsplit("####", 1)[0].split("\n")
    return [line.strip() for line in lines if CALC.sub("", line).strip()]


def solution_steps(gsm8k_answer: str) -> list[str]:
    """The steps of a GSM8K reference solution: non-empty lines before '####', <<calc>> annotations removed."""
    return [CALC.sub("", line).strip() for line in raw_steps(gsm8k_answer)]


def number_spans(text: str) -> list[tuple[int, int, Fraction]]:
    """(start, end, value) of every well-formed number in `text` (data.scan_numbers; the span covers the
    number's own characters, thousands commas included)."""
    out = []
    for n in scan_numbers(text, limit=len(text) + 1):
        m = NUMBER_SPAN.match(text, n.start)
        if n.malformed or m is None:
            continue
        out.append((n.start, n.start + len(m.group(0).rstrip(",")), n.value))
    return out


def injectable_steps(steps: Sequence[str]) -> list[int]:
    """Indices of the steps holding at least one number (only those can be made wrong by `inject_error`)."""
    return [i for i, s in enumerate(steps) if number_spans(s)]


def format_number(value: Fraction, like: str = "0") -> str:
    """`value` written like the number `like`: as many decimals (2 at most added when it needs them), thousands
    commas if `like` has them."""
    places = len(like.split(".")[1]) if "." in like else 0
    if (value * 10 ** places).denominator != 1:
        places = max(places, 2)
    scaled = round(value * 10 ** places)
    sign, digits = ("-" if scaled < 0 else ""), str(abs(scaled)).rjust(places + 1, "0")
    whole, frac = digits[:len(digits) - places], digits[len(digits) - places:]
    whole = f"{int(whole):,}" if "," in like else whole
    return sign + whole + ("." + frac if places else "")


def calc_value(expr: str) -> Fraction | None:
    """The exact value of a calculator annotation's arithmetic (numbers, + - * /, parentheses), walked on the
    syntax tree with a whitelist: never eval. None for anything else (or division by zero)."""
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("not arithmetic")

    if len(expr) > 200 or not re.fullmatch(r"[\d\s.+\-*/()]+", expr.replace(",", "")):
        return None
    try:
        return walk(ast.parse(expr.replace(",", ""), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def substitute(text: str, mapping: dict) -> str:
    """`text` with every number whose value is a key of `mapping` rewritten as the mapped value (one pass)."""
    for start, end, value in reversed(number_spans(text)):
        if value in mapping:
            text = text[:start] + format_number(mapping[value], text[start:end]) + text[end:]
    return text


def wrong_value(value: Fraction, like: str, rng: random.Random) -> Fraction:
    """A different value for a number written `like`: value +- 1, 2, 3, 4, 5 or 10 units of its last decimal place,
    never crossing from positive (or zero) to zero or negative. Drawn by `rng`."""
    unit = Fraction(1, 10 ** (len(like.split(".")[1]) if "." in like else 0))
    candidates = [value + s * d * unit for d in (1, 2, 3, 4, 5, 10) for s in (1, -1)]
    return rng.choice([c for c in candidates if value < 0 or c > 0])


# ---------------------------------------------------------------------------------------
# Error injection
def inject_error(solution: str, step_index: int, rng: random.Random | int, propagate: bool) -> dict:
    """Make step `step_index` of a GSM8K reference solution wrong by changing exactly one number in it.

    The number changed is the step's result: the number whose value is the result of the step's last <<a op b=c>>
    annotation, else the first number after its last '=', else its last number. The new value is `wrong_value`.
    propagate=False: every other step is unchanged (later steps still use the right value), and so is the final
    answer. propagate=True: later steps follow the wrong value: each later annotation whose operands changed is
    recomputed (`calc_value`) and its result changes too, and every number equal to a changed value is rewritten,
    the final answer included. That substitution is by value, so a later number that merely equals an old value is
    rewritten as well (an approximation).

    Returns {"solution" (GSM8K form, annotations removed, "#### final"), "steps", "original_steps",
    "first_wrong" (= step_index), "num_steps", "old", "new" (the number's text before/after), "propagate",
    "final"}. Deterministic for a seeded rng (an int is used as a seed). ValueError for a step without a number
    or an index out of range; the returned solution always differs from the reference."""
    rng = random.Random(rng) if isinstance(rng, int) else rng
    raw = raw_steps(solution)
    steps = [CALC.sub("", r).strip() for r in raw]
    if not 0 <= step_index < len(steps):
        raise ValueError(f"step_index {step_index} out of range: the solution has {len(steps)} steps")
    spans = number_spans(steps[step_index])
    if not spans:
        raise ValueError(f"step {step_index} has no number to change: {steps[step_index]!r}")
    results = [calc_value(e.split("=")[-1]) for e in CALC.findall(raw[step_index])]
    eq = steps[step_index].rfind("=")
    start, end, old = ([s for s in spans if results and s[2] == results[-1]]
                       or [s for s in spans if eq >= 0 and s[0] > eq][:1] or spans)[-1]
    old_text = steps[step_index][start:end]
    new = wrong_value(old, old_text, rng)
    new_text = format_number(new, old_text)
    new_steps = list(steps)
    new_steps[step_index] = steps[step_index][:start] + new_text + steps[step_index][end:]
    final = extract_gold(solution)
    if propagate:
        changed = {old: new}
        for j in range(step_index + 1, len(steps)):
            for expr in CALC.findall(raw[j]):
                left, _, res = expr.rpartition("=")
                before, after, result = calc_value(left), calc_value(substitute(left, changed)), calc_value(res)
                if None not in (before, after, result) and after != before:
                    changed[result] = after
            new_steps[j] = substitute(steps[j], changed)
        final = substitute(final, changed)
    return {"solution": "\n".join(new_steps) + f"\n#### {final}", "steps": new_steps, "original_steps": steps,
            "first_wrong": step_index, "num_steps": len(steps), "old": old_text, "new": new_text,
            "propagate": propagate, "final": final}


def build_error_set(rows: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """A labelled first-wrong-step set from the first `n` usable GSM8K rows (>= 2 steps, a step with a number):
    per row one step drawn uniformly among the steps with a number, and both variants with the same step and
    wrong value ("propagate" then "no_propagate"), so 2n records. Each record is inject_error's dict plus
    "id" (row index), "question", "gold" (the reference answer), "variant". Deterministic for a seed."""
    out = []
    for idx, row in enumerate(rows):
        if len(out) >= 2 * n:
            break
        steps = solution_steps(row["answer"])
        candidates = injectable_steps(steps)
        if len(steps) < 2 or not candidates:
            continue
        step = random.Random(f"{seed}-{idx}").choice(candidates)
        for variant, prop in (("propagate", True), ("no_propagate", False)):
            rec = inject_error(row["answer"], step, random.Random(f"{seed}-{idx}-value"), prop)
            out.append(rec | {"id": idx, "question": row["question"], "gold": extract_gold(row["answer"]),
                              "variant": variant})
    return out


# ---------------------------------------------------------------------------------------
# Per-step scores
def reasoning_target(steps: Sequence[str]) -> tuple[str, list[int]]:
    """("step0\\nstep1\\n…\\n", the character offset where each step starts): each step owns its newline."""
    starts, pos = [], 0
    for s in steps:
        starts.append(pos)
        pos += len(s) + 1
    return "".join(s + "\n" for s in steps), starts


def token_steps(tokenizer, context: str, target: str, starts: Sequence[int]) -> list[int]:
    """The step index of each target token (as `logprob.encode_pair` splits context+target): the step holding
    the token's first character; a token starting in the context belongs to step 0."""
    from ..logprob import encode_pair

    ids, first = encode_pair(tokenizer, context, target)
    offsets = tokenizer(context + target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    tail = offsets[len(offsets) - (len(ids) - first):]
    return [max(0, bisect.bisect_right(starts, max(0, s - len(context))) - 1) for s, _ in tail]


def step_sums(values: Sequence[float], steps_of: Sequence[int], num_steps: int) -> tuple[list[float], list[int]]:
    """(sum of `values` per step, token count per step) from each token's step index."""
    sums, counts = [0.0] * num_steps, [0] * num_steps
    for v, k in zip(values, steps_of):
        sums[k] += v
        counts[k] += 1
    return sums, counts


def logprob_drops(sums: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Per step: its mean token log-prob minus the mean over the steps before it (step 0: over all steps).
    NaN for a step without tokens."""
    out = []
    for k in range(len(sums)):
        ref_s, ref_n = (sum(sums[:k]), sum(counts[:k])) if k else (sum(sums), sum(counts))
        out.append(sums[k] / counts[k] - ref_s / ref_n if counts[k] and ref_n else float("nan"))
    return out


def trace_deltas(probe: Sequence[tuple[int, float]], num_steps: int) -> list[float]:
    """Per step: log P(gold) after it minus before it, from `evaluation.trace_probe` of the tagged solution
    (its lines are the opening tag, the steps, the closing tag: step k is line k + 1)."""
    values = [v for _, v in probe]
    return [values[k + 2] - values[k + 1] for k in range(num_steps)]


def predict_first_wrong(scores: Sequence[float] | None) -> int | None:
    """The argmin of the per-step scores (ties: the earliest step; NaN ignored); None if nothing is comparable."""
    ok = [(s, k) for k, s in enumerate(scores or []) if not math.isnan(s)]
    return min(ok)[1] if ok else None


def per_step_scores(model, tokenizer, examples: Sequence[dict], *, reference="disable_adapter",
                    tag_style: str = "reasoning", batch_size: int = 8, trace: bool = True,
                    answer_only: bool = True) -> list[dict]:
    """Per example (build_error_set records: question, steps, gold): {"implicit", "logprob_drop", "trace"}, each a
    list with one score per step (see the module docstring), or None where it could not be computed (a reasoning
    longer than the window; "implicit" when reference is None; "trace" when trace is False).
    `model` is pi_SFT; `reference` pi_ref (a model, or "disable_adapter"; see rerank.reference_scope)."""
    from ..data import format_solution
    from ..evaluation import trace_probe
    from ..rerank import prompt_strings, reference_scope, token_logprobs

    open_tag, _ = reasoning_tags(tag_style)
    prompts = prompt_strings(tokenizer, [e["question"] for e in examples], tag_style)
    contexts = [p + open_tag + "\n" for p in prompts]
    targets = [reasoning_target(e["steps"]) for e in examples]
    pol = token_logprobs(model, tokenizer, contexts, [t for t, _ in targets], batch_size=batch_size)
    ref = [None] * len(examples)
    if reference is not None:
        ref_model, scope = reference_scope(model, reference)
        ref = token_logprobs(ref_model, tokenizer, contexts, [t for t, _ in targets], batch_size=batch_size,
                             scope=scope)
    out = []
    for e, c, (t, starts), lp, rl in zip(examples, contexts, targets, pol, ref):
        k = len(e["steps"])
        row = {name: None for name in SCORE_NAMES}
        if lp is not None:
            where = token_steps(tokenizer, c, t, starts)
            row["logprob_drop"] = logprob_drops(*step_sums(lp, where, k))
            if rl is not None:
                row["implicit"] = step_sums([a - b for a, b in zip(lp, rl)], where, k)[0]
        if trace:
            solution = format_solution("\n".join(e["steps"]) + "\n#### " + str(e["gold"]), tag_style)
            row["trace"] = trace_deltas(trace_probe(model, tokenizer, e["question"], solution, str(e["gold"]),
                                                    answer_only=answer_only, tag_style=tag_style), k)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------
# Accuracy, baselines, display
def localisation_accuracy(predictions: Sequence[int | None], truths: Sequence[int]) -> float:
    """The fraction of predictions equal to the true first wrong step (None counts as wrong); NaN if empty."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions but {len(truths)} true steps")
    return sum(p == t for p, t in zip(predictions, truths)) / len(truths) if truths else float("nan")


def random_step_baseline(num_steps: Sequence[int]) -> float:
    """The expected accuracy of a uniformly random step: the mean of 1/num_steps (exact, not sampled)."""
    if any(k < 1 for k in num_steps):
        raise ValueError("every solution needs at least one step")
    return sum(1 / k for k in num_steps) / len(num_steps) if num_steps else float("nan")


def last_step_baseline(truths: Sequence[int], num_steps: Sequence[int]) -> float:
    """The accuracy of always predicting the last step."""
    return localisation_accuracy([k - 1 for k in num_steps], truths)


def render_steps(steps: Sequence[str], predicted: int | None, true: int | None, *, as_html: bool = False) -> str:
    """The steps, numbered, with the true first wrong step and the prediction marked ("<- true", "<- predicted";
    in HTML: red background for the true step, a bold border for the predicted one). Text is escaped."""
    if not as_html:
        marks = lambda k: "".join(m for m, hit in ((" <- true", k == true), (" <- predicted", k == predicted)) if hit)
        return "\n".join(f"{k + 1:>2}. {s}{marks(k)}" for k, s in enumerate(steps))
    items = []
    for k, s in enumerate(steps):
        style = ("background:#fdd;" if k == true else "") + ("border:2px solid #000;" if k == predicted else "")
        label = " ".join(m for m, hit in (("[true]", k == true), ("[predicted]", k == predicted)) if hit)
        items.append(f'<li style="{style}">{html.escape(s)} <b>{label}</b></li>')
    return "<ol>" + "".join(items) + "</ol>"

