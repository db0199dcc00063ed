import math

import pandas as pd
import pytest

from helpers import logprob, rerank
from helpers.evaluation import pass_at_k


def frame(groups):
    """A sample_groups-like DataFrame from [(answers, correct, scores), ...] per question."""
    rows = []
    for q, (answers, correct, scores) in enumerate(groups):
        for s, (a, c, sc) in enumerate(zip(answers, correct, scores)):
            rows.append({"q": q, "sample": s, "question": f"Q{q}", "completion": f"c{q}{s}", "own_answer": a,
                         "strict_correct": c, "score": sc})
    return pd.DataFrame(rows)


# ---- pass@k ---------------------------------------------------------------------------
def test_pass_at_k_edge_cases():
    assert pass_at_k(5, 5, 1) == 1.0 and pass_at_k(5, 5, 5) == 1.0  # n = c
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 5) == 0.0  # c = 0, also at k = n
    assert pass_at_k(5, 1, 5) == 1.0  # k = n with one correct
    assert pass_at_k(5, 3, 3) == 1.0  # k > n - c: every k-subset holds a correct one
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(8, 1, 1) == pytest.approx(1 / 8)
    assert pass_at_k(1, 0, 1) == 0.0 and pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize("n,c,k", [(4, 1, 0), (4, 1, 5), (4, 0, 5), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_undefined_inputs(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


# ---- maj@k ----------------------------------------------------------------------------
def test_answer_key_groups_equal_values_and_drops_non_answers():
    assert rerank.answer_key("18") == rerank.answer_key("$18.00") == rerank.answer_key("36/2")
    assert rerank.answer_key("17") != rerank.answer_key("18")
    assert rerank.answer_key(None) is None and rerank.answer_key("") is None and rerank.answer_key("3 or 18") is None


def test_majority_votes_by_value_ties_to_first_seen_and_ignores_missing():
    assert rerank.majority_correct(["7", "18", "$18.00"], [False, True, True])  # 18 wins 2-1 across spellings
    assert not rerank.majority_correct(["7", "18"], [False, True])  # tie: the first seen (7)
    assert rerank.majority_correct(["18", "7"], [True, False])
    assert rerank.majority_correct([None, "", "5"], [False, False, True])  # missing answers do not vote
    assert not rerank.majority_correct([None, None], [False, False])  # no vote at all: wrong
    assert not rerank.majority_correct([], [])
    with pytest.raises(ValueError):
        rerank.majority_correct(["1"], [True, False])


def test_maj_at_k_uses_the_first_k_samples():
    answers = [["7", "18", "18"], ["5", "5", "6"]]
    correct = [[False, True, True], [True, True, False]]
    assert rerank.maj_at_k(answers, correct, 1) == 0.5  # q0 picks 7 (wrong), q1 picks 5
    assert rerank.maj_at_k(answers, correct, 2) == 0.5  # q0: 7/18 tie -> 7
    assert rerank.maj_at_k(answers, correct, 3) == 1.0
    assert math.isnan(rerank.maj_at_k([], [], 1))
    with pytest.raises(ValueError):
        rerank.maj_at_k(answers, correct, 4)
    with pytest.raises(ValueError):
        rerank.maj_at_k(answers, correct, 0)


def test_pass_curve_values_default_ks_and_edge_cases():
    df = frame([(["7", "18", "18"], [False, True, True], [0, 0, 0]),
                ([None, "5", "6"], [False, True, False], [0, 0, 0])])
    curve = rerank.pass_curve(df)
    assert list(curve["k"]) == [1, 2, 3] and list(curve["questions"]) == [2, 2, 2]
    assert curve["pass_at_k"].tolist() == pytest.approx([(2 / 3 + 1 / 3) / 2, (1 + 2 / 3) / 2, 1.0])
    assert curve["maj_at_k"].tolist() == [0.0, 0.5, 1.0]  # k=2: q0 tie 7/18 -> 7, q1 only "5" votes
    assert rerank.pass_curve(df, ks=[3])["pass_at_k"].tolist() == [1.0]
    with pytest.raises(ValueError):
        rerank.pass_curve(df, ks=[4])
    empty = rerank.pass_curve(df.iloc[:0])
    assert empty.empty and list(empty.columns) == ["k", "pass_at_k", "maj_at_k", "questions"]
    with pytest.raises(KeyError, match="strict_correct"):
        rerank.pass_curve(df.drop(columns="strict_correct"))
    uneven = df.drop(index=5)  # q1 has 2 samples: k runs to 2
    assert list(rerank.pass_curve(uneven)["k"]) == [1, 2]


# ---- rerank ---------------------------------------------------------------------------
def test_rerank_at_1_picks_the_highest_score_ties_first_nan_as_minus_inf():
    df = frame([(["1", "2", "3"], [False, True, False], [0.1, 0.5, 0.5]),  # tie 0.5: the first (correct)
                (["1", "2"], [True, False], [float("nan"), -1.0]),  # NaN < -1
                (["1", "2"], [True, False], [float("-inf"), float("-inf")])])  # all -inf: the first
    assert rerank.rerank_picks(df, "score") == [(True, 1 / 3), (False, 0.5), (True, 0.5)]
    assert rerank.rerank_at_1(df, "score") == pytest.approx(2 / 3)
    assert math.isnan(rerank.rerank_at_1(df.iloc[:0], "score"))


def test_rerank_gain_value_interval_and_determinism():
    groups = [(["a"] * 4, [True, False, False, False], [1, 0, 0, 0])] * 6 + \
             [(["a"] * 4, [False, True, True, True], [1, 0, 0, 0])] * 2
    df = frame(groups)
    out = rerank.rerank_gain(df, "score", n_boot=500, seed=3)
    assert out["questions"] == 8
    assert out["rerank_at_1"] == pytest.approx(6 / 8)
    assert out["pass_at_1"] == pytest.approx((6 * 0.25 + 2 * 0.75) / 8)
    assert out["gain"] == pytest.approx(out["rerank_at_1"] - out["pass_at_1"])
    assert out["ci_low"] <= out["gain"] <= out["ci_high"] and out["ci_low"] < out["ci_high"]
    assert out == rerank.rerank_gain(df, "score", n_boot=500, seed=3)
    same = frame([(["a", "b"], [True, True], [0, 1]), (["a", "b"], [False, False], [1, 0])])
    assert rerank.rerank_gain(same, "score", n_boot=50) == {"rerank_at_1": 0.5, "pass_at_1": 0.5, "gain": 0.0,
                                                            "ci_low": 0.0, "ci_high": 0.0, "questions": 2}
    empty = rerank.rerank_gain(df.iloc[:0], "score")
    assert empty["questions"] == 0 and math.isnan(empty["gain"])


# ---- scores, with a fake scorer ---------------------------------------------------------
@pytest.fixture
def fake_scorer(monkeypatch):
    """score_or_none: -1 per target character with the adapter on, -0.25 off (or for another model); None for
    an empty target or one containing 'UNSCORABLE'."""
    calls = []

    def fake(model, tokenizer, contexts, targets, batch_size, max_length, share_prefix, scope, groups=None):
        with scope():
            per = -1.0 if getattr(model, "adapter_on", False) else -0.25
            calls.append(list(targets))
            return [None if not t or "UNSCORABLE" in t else [per] * len(t) for t in targets]

    monkeypatch.setattr(logprob, "score_or_none", fake)
    return calls


def samples_frame():
    return pd.DataFrame({"q": [0, 0, 1], "question": ["Q0", "Q0", "Q1"], "completion": ["abcd", "", "UNSCORABLE"],
                         "own_answer": ["4", None, "x" * 300], "strict_correct": [True, False, False]})


def test_completion_and_implicit_scores_with_a_fake_scorer(char_tok, fake_scorer, fake_model_cls):
    FakeModel = fake_model_cls
    model, df = FakeModel(), samples_frame()
    assert rerank.completion_logprob_scores(model, char_tok, df, "reasoning") == [-1.0, -math.inf, -math.inf]
    # log pi - log pi_ref = (-1 - -0.25) per token, summed over the 4 tokens of "abcd"
    assert rerank.implicit_reward_scores(model, char_tok, df, "reasoning") == [-3.0, -math.inf, -math.inf]
    other = FakeModel()
    other.adapter_on = False
    assert rerank.implicit_reward_scores(model, char_tok, df, reference=other)[0] == -3.0
    assert rerank.implicit_reward_scores(model, char_tok, df, reference=model)[0] == 0.0
    assert model.adapter_on  # the adapter is back on afterwards


def test_reference_must_be_a_model_or_disable_adapter(fake_model_cls):
    FakeModel = fake_model_cls
    with pytest.raises(ValueError, match="disable_adapter"):
        rerank.reference_scope(object(), "disable_adapter")
    with pytest.raises(ValueError):
        rerank.reference_scope(FakeModel(), "base")
    with pytest.raises(ValueError):
        rerank.reference_scope(FakeModel(), None)


def test_own_answer_scores_skip_missing_answers(char_tok, monkeypatch):
    seen = []

    def fake_gold(model, tokenizer, prompts, completions, golds, batch_size=8):
        seen.extend(golds)
        return [[-0.5, -1.5] for _ in golds]

    monkeypatch.setattr(logprob, "gold_logprobs", fake_gold)
    df = samples_frame()
    assert rerank.own_answer_scores(None, char_tok, df, "reasoning") == [-2.0, -math.inf, -math.inf]
    assert rerank.own_answer_scores(None, char_tok, df, "reasoning", transform="mean")[0] == -1.0
    assert seen == ["4", "4"]  # only the row with a usable answer was scored
    none = df.assign(own_answer=[None, None, None])
    assert rerank.own_answer_scores(None, char_tok, none) == [-math.inf] * 3


def test_best_of_n_confidence_goes_through_own_answer_scores(char_tok, monkeypatch):
    from helpers import evaluation

    monkeypatch.setattr(logprob, "gold_logprobs",
                        lambda m, t, p, c, g, b=8: [[-float(len(c_))] for c_ in c])  # shorter completion wins
    df = pd.DataFrame({"q": [0, 0], "question": ["Q", "Q"], "completion": ["long long", "short"],
                       "own_answer": ["1", "2"], "strict_correct": [False, True]})
    out = evaluation.best_of_n(None, char_tok, df)
    assert out["own-answer confidence"] == 1.0 and out["first sample"] == 0.0


# ---- the real model ---------------------------------------------------------------------
@pytest.mark.slow
def test_implicit_reward_is_zero_for_an_untrained_adapter_and_matches_the_scorer(smol):
    import torch

    from helpers import data

    model, tok = smol
    rows = data.load_gsm8k_rows("train", "bundled", n=2)
    df = pd.DataFrame({"q": [0, 0, 1], "question": [rows[0]["question"]] * 2 + [rows[1]["question"]],
                       "completion": [data.format_solution(rows[0]["answer"]), "<reasoning>\n48/2 = 20\n</reasoning>"
                                      "\n<answer>\n68\n</answer>", data.format_solution(rows[1]["answer"])],
                       "own_answer": ["72", "68", None], "strict_correct": [True, False, True]})
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(float(p.detach().abs().max()) == 0.0 for p in lora_b.values())  # a fresh adapter: B = 0
    assert rerank.implicit_reward_scores(model, tok, df) == [0.0, 0.0, 0.0]
    saved = {n: p.detach().clone() for n, p in lora_b.items()}
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in lora_b.values():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        scores = rerank.implicit_reward_scores(model, tok, df)
        assert all(abs(s) > 1e-3 for s in scores)
        prompts = rerank.prompt_strings(tok, df["question"], "reasoning")
        pol = logprob.score_targets(model, tok, prompts, list(df["completion"]))
        with model.disable_adapter():
            ref = logprob.score_targets(model, tok, prompts, list(df["completion"]))
        assert scores == pytest.approx([sum(a) - sum(b) for a, b in zip(pol, ref)], abs=1e-3)
        own = rerank.own_answer_scores(model, tok, df)
        assert math.isfinite(own[0]) and math.isfinite(own[1]) and own[2] == -math.inf
        mean_lp = rerank.completion_logprob_scores(model, tok, df)
        assert mean_lp == pytest.approx([sum(x) / len(x) for x in pol], abs=1e-4)
    finally:
        with torch.no_grad():
            for n, p in lora_b.items():
                p.copy_(saved[n])
