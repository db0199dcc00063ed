import math
import random
from fractions import Fraction

import pytest

from helpers import data, evaluation, logprob, steps

NATALIA = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
CHAIN = ("He writes each friend 3*2=<<3*2=6>>6 pages a week\n\nSo he writes 6*2=<<6*2=12>>12 pages every week\n"
         "That means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624")


@pytest.fixture(scope="module")
def train_rows():
    return data.load_gsm8k_rows("train", "bundled", n=400)


def values(text):
    return [v for _, _, v in steps.number_spans(text)]


# ---- steps and numbers ------------------------------------------------------------------
def test_solution_steps_drop_annotations_blank_lines_and_the_answer():
    assert steps.solution_steps(CHAIN) == ["He writes each friend 3*2=6 pages a week",
                                           "So he writes 6*2=12 pages every week",
                                           "That means he writes 12*52=624 pages a year"]
    assert steps.solution_steps("Just 5 apples.\n#### 5") == ["Just 5 apples."]
    with pytest.raises(ValueError, match="####"):
        steps.solution_steps("no answer line")
    with pytest.raises(ValueError):
        steps.solution_steps(None)


def test_number_spans_cover_commas_and_skip_malformed():
    text = "Pay $1,000 and 0.5 more, not 1,8, at 10:30 today."
    spans = steps.number_spans(text)
    assert [text[s:e] for s, e, _ in spans] == ["1,000", "0.5"]
    assert [v for _, _, v in spans] == [1000, Fraction(1, 2)]
    assert steps.injectable_steps(["No numbers here.", "But 3 here."]) == [1]


def test_calc_value_is_arithmetic_only():
    assert steps.calc_value("48/2") == 24 and steps.calc_value("0.2*50") == 10
    assert steps.calc_value("(3-2)*4") == 4 and steps.calc_value("-5+1,000") == 995
    assert steps.calc_value("10/4") == Fraction(5, 2)
    for bad in ("2**10", "1/0", "__import__('os')", "abs(3)", "", "3 +", "9" * 300):
        assert steps.calc_value(bad) is None


def test_format_number_keeps_the_style():
    assert steps.format_number(Fraction(1234), "1,000") == "1,234"
    assert steps.format_number(Fraction(1, 10), "0.2") == "0.1"
    assert steps.format_number(Fraction(3, 2), "0.50") == "1.50"
    assert steps.format_number(Fraction(25, 2), "12") == "12.50"  # a non-integer where an integer stood: 2 places
    assert steps.format_number(Fraction(-7), "5") == "-7"
    assert steps.format_number(Fraction(7), "5") == "7"


def test_wrong_value_differs_and_keeps_the_sign():
    rng = random.Random(0)
    for v, like in [(Fraction(1), "1"), (Fraction(0), "0"), (Fraction(1, 10), "0.1"), (Fraction(-3), "-3")]:
        for _ in range(50):
            w = steps.wrong_value(v, like, rng)
            assert w != v and (v < 0 or w > 0)
            assert steps.format_number(w, like) != like


# ---- error injection --------------------------------------------------------------------
def test_inject_error_without_propagation_changes_exactly_one_number():
    out = steps.inject_error(NATALIA, 0, random.Random(1), propagate=False)
    old = steps.solution_steps(NATALIA)
    assert out["first_wrong"] == 0 and out["num_steps"] == 2 and out["old"] == "24" and out["new"] != "24"
    assert out["steps"][1] == old[1] and out["final"] == "72" and out["solution"].endswith("#### 72")
    before, after = values(old[0]), values(out["steps"][0])
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 1
    assert after[-1] == Fraction(out["new"])  # the result (24) is what changed, not an operand
    assert out == steps.inject_error(NATALIA, 0, random.Random(1), propagate=False)  # deterministic
    assert out == steps.inject_error(NATALIA, 0, 1, propagate=False)  # an int is a seed


def test_inject_error_with_propagation_recomputes_later_steps():
    out = steps.inject_error(CHAIN, 0, 5, propagate=True)
    new6 = Fraction(out["new"])
    assert out["old"] == "6" and values(out["steps"][0]) == [3, 2, new6]
    assert values(out["steps"][1]) == [new6, 2, new6 * 2]
    assert values(out["steps"][2]) == [new6 * 2, 52, new6 * 104]
    assert out["final"] == steps.format_number(new6 * 104) and out["solution"].endswith(f"#### {out['final']}")
    last = steps.inject_error(CHAIN, 2, 5, propagate=True)  # an error in the last step changes the final answer
    assert last["final"] == last["new"] and last["steps"][:2] == steps.solution_steps(CHAIN)[:2]
    assert steps.inject_error(CHAIN, 2, 5, propagate=False)["final"] == "624"


def test_inject_error_rejects_bad_steps_and_handles_one_step():
    one = "He has 5 apples.\n#### 5"
    out = steps.inject_error(one, 0, 0, propagate=True)
    assert out["num_steps"] == 1 and out["steps"] != ["He has 5 apples."] and out["final"] == out["new"]
    with pytest.raises(ValueError, match="out of range"):
        steps.inject_error(one, 1, 0, propagate=True)
    with pytest.raises(ValueError, match="no number"):
        steps.inject_error("No number here.\nIt is 5.\n#### 5", 0, 0, propagate=False)


def test_inject_error_never_leaves_a_solution_unchanged(train_rows):
    for idx, row in enumerate(train_rows):
        original = steps.solution_steps(row["answer"])
        for k in steps.injectable_steps(original):
            for prop in (True, False):
                out = steps.inject_error(row["answer"], k, random.Random(idx), prop)
                assert out["steps"][:k] == original[:k] and out["steps"][k] != original[k], (idx, k)
                if not prop:
                    assert out["steps"][k + 1:] == original[k + 1:] and out["final"] == data.extract_gold(row["answer"])


def test_build_error_set_labels_both_variants(train_rows):
    rows = [{"question": "one step", "answer": "He has 5 apples.\n#### 5"}] + train_rows[:30]
    es = steps.build_error_set(rows, 10, seed=0)
    assert len(es) == 20 and [e["variant"] for e in es[:2]] == ["propagate", "no_propagate"]
    assert all(e["id"] != 0 and e["num_steps"] >= 2 for e in es)  # the one-step solution is skipped
    for a, b in zip(es[::2], es[1::2]):
        assert (a["id"], a["first_wrong"], a["old"], a["new"]) == (b["id"], b["first_wrong"], b["old"], b["new"])
        assert b["final"] == b["gold"] == data.extract_gold(rows[a["id"]]["answer"])
    assert es == steps.build_error_set(rows, 10, seed=0)
    assert [e["first_wrong"] for e in es] != [e["first_wrong"] for e in steps.build_error_set(rows, 10, seed=1)]
    assert steps.build_error_set(rows, 0) == [] and steps.build_error_set([], 5) == []


# ---- per-step scores ----------------------------------------------------------------------
def test_token_steps_map_each_token_to_its_step(char_tok):
    target, starts = steps.reasoning_target(["ab", "cde"])
    assert target == "ab\ncde\n" and starts == [0, 3]
    assert steps.token_steps(char_tok, "ctx:", target, starts) == [0, 0, 0, 1, 1, 1, 1]


def test_step_sums_drops_traces_and_predictions():
    sums, counts = steps.step_sums([-1, -1, -2, -6, -6], [0, 0, 1, 2, 2], 4)
    assert sums == [-2, -2, -12, 0] and counts == [2, 1, 2, 0]
    drops = steps.logprob_drops(sums, counts)
    assert drops[:3] == pytest.approx([-1 - (-16 / 5), -2 - (-1), -6 - (-4 / 3)]) and math.isnan(drops[3])
    probe = [(0, -5.0), (1, -5.0), (2, -3.0), (3, -8.0), (4, -7.0), (5, -7.0)]
    assert steps.trace_deltas(probe, 3) == [2.0, -5.0, 1.0]
    assert steps.predict_first_wrong([0.0, -1.0, -1.0]) == 1  # ties: the earliest
    assert steps.predict_first_wrong([float("nan"), 2.0, float("-inf")]) == 2
    assert steps.predict_first_wrong([float("nan")]) is None and steps.predict_first_wrong(None) is None
    assert steps.predict_first_wrong([]) is None


def test_per_step_scores_with_a_fake_scorer(char_tok, monkeypatch, fake_model_cls):
    Model = fake_model_cls
    def fake(model, tokenizer, contexts, targets, batch_size, max_length, share_prefix, scope, groups=None):
        with scope():  # on: -1 per char, except -5 on the digit '9'; off: -0.5 per char
            return [[(-5.0 if ch == "9" else -1.0) if model.adapter_on else -0.5 for ch in t] for t in targets]

    probes = []

    def fake_probe(model, tokenizer, question, completion, gold, *, answer_only=False, tag_style="reasoning"):
        probes.append((completion, gold))
        lines = data.split_reasoning(completion)[0].split("\n")
        return [(k, -float(k)) for k in range(len(lines) + 1)]

    monkeypatch.setattr(logprob, "score_or_none", fake)
    monkeypatch.setattr(evaluation, "trace_probe", fake_probe)
    ex = {"question": "Q", "steps": ["a 1", "b 9", "c 2"], "gold": "3"}
    [row] = steps.per_step_scores(Model(), char_tok, [ex])
    # 4 characters per step with its newline: (-1 - -0.5) * 4, and the 9 costs 4 more
    assert row["implicit"] == [-2.0, -6.0, -2.0]
    assert steps.predict_first_wrong(row["implicit"]) == 1 and steps.predict_first_wrong(row["logprob_drop"]) == 1
    assert row["trace"] == [-1.0, -1.0, -1.0] and probes[0][1] == "3"
    assert probes[0][0].startswith("<reasoning>\na 1\nb 9\nc 2\n</reasoning>")
    [row] = steps.per_step_scores(Model(), char_tok, [ex], reference=None, trace=False)
    assert row["implicit"] is None and row["trace"] is None and len(row["logprob_drop"]) == 3


# ---- accuracy, baselines, display ----------------------------------------------------------
def test_accuracy_and_baselines():
    assert steps.localisation_accuracy([0, 2, None], [0, 1, 2]) == pytest.approx(1 / 3)
    assert math.isnan(steps.localisation_accuracy([], []))
    with pytest.raises(ValueError):
        steps.localisation_accuracy([0], [0, 1])
    assert steps.random_step_baseline([2, 4]) == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert steps.random_step_baseline([1]) == 1.0
    with pytest.raises(ValueError):
        steps.random_step_baseline([0])
    assert steps.last_step_baseline([1, 0, 3], [2, 3, 4]) == pytest.approx(2 / 3)


def test_render_marks_and_escapes():
    text = steps.render_steps(["a", "b <x>", "c"], predicted=2, true=1)
    assert text.splitlines() == [" 1. a", " 2. b <x> <- true", " 3. c <- predicted"]
    assert steps.render_steps(["only"], predicted=0, true=0) == " 1. only <- true <- predicted"
    page = steps.render_steps(["a", "<script>"], predicted=None, true=1, as_html=True)
    assert "<script>" not in page and "&lt;script&gt;" in page and "[true]" in page and "[predicted]" not in page


# ---- the real model ---------------------------------------------------------------------
@pytest.mark.slow
def test_per_step_sums_add_up_to_the_whole_reasoning(smol):
    import torch

    from helpers import rerank

    model, tok = smol
    examples = steps.build_error_set(data.load_gsm8k_rows("train", "bundled", n=4), 1, seed=0)
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    saved = {n: p.detach().clone() for n, p in lora_b.items()}
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for p in lora_b.values():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        rows = steps.per_step_scores(model, tok, examples)
        contexts = [p + "<reasoning>\n" for p in rerank.prompt_strings(tok, [e["question"] for e in examples],
                                                                        "reasoning")]
        targets = [steps.reasoning_target(e["steps"])[0] for e in examples]
        whole = rerank.token_logratios(model, tok, contexts, targets)
        pol = logprob.score_targets(model, tok, contexts, targets)
        for e, row, w, lp, c, t in zip(examples, rows, whole, pol, contexts, targets):
            k = e["num_steps"]
            assert len(row["implicit"]) == len(row["logprob_drop"]) == len(row["trace"]) == k
            assert sum(row["implicit"]) == pytest.approx(sum(w), abs=1e-3)
            where = steps.token_steps(tok, c, t, steps.reasoning_target(e["steps"])[1])
            assert len(where) == len(lp) and sorted(set(where)) == list(range(k))
            sums, _ = steps.step_sums(lp, where, k)
            assert sum(sums) == pytest.approx(sum(lp), abs=1e-4)
            assert all(math.isfinite(x) for name in steps.SCORE_NAMES for x in row[name])
            assert 0 <= steps.predict_first_wrong(row["trace"]) < k
    finally:
        with torch.no_grad():
            for n, p in lora_b.items():
                p.copy_(saved[n])
