import json
import math

import pandas as pd
import pytest

from helpers import data, dynamics, logprob, sft_select


def scored(values):
    return [{"question": f"Q{i}", "answer": f"A {i}\n#### {i}", "llh_mean": v} for i, v in enumerate(values)]


# ---- scoring and selection ---------------------------------------------------------------
def test_score_pool_means_sums_and_unscorable_rows(char_tok, monkeypatch):
    seen = {}

    def fake(model, tokenizer, contexts, targets, batch_size, max_length, share_prefix, scope, groups=None):
        seen["targets"] = list(targets)
        return [[-1.0, -3.0], None]

    monkeypatch.setattr(logprob, "score_or_none", fake)
    rows = [{"question": "Q0", "answer": "x 1\n#### 1"}, {"question": "Q1", "answer": "y 2\n#### 2"}]
    out = sft_select.score_pool(None, char_tok, rows, "think")
    assert out[0] == rows[0] | {"llh_mean": -2.0, "llh_sum": -4.0, "tokens": 2}
    assert out[1]["llh_mean"] == -math.inf and out[1]["tokens"] == 0
    assert seen["targets"][0] == data.format_solution(rows[0]["answer"], "think")
    assert "llh_mean" not in rows[0]  # the input rows are not modified


def test_select_subsets_sizes_order_disjointness_and_ties():
    pool = scored([-1.0, -3.0, -0.5, -2.0, -3.0, float("-inf"), -0.5, -1.5])
    out = sft_select.select_subsets(pool, 2, seed=0)
    assert list(out) == list(sft_select.SUBSET_NAMES) and all(len(v) == 2 for v in out.values())
    assert [r["question"] for r in out["high_llh_train"]] == ["Q2", "Q6"]  # tie -0.5: pool order
    assert [r["question"] for r in out["low_llh_train"]] == ["Q1", "Q4"]  # -inf (unscorable) is never picked
    assert not {id(r) for r in out["high_llh_train"]} & {id(r) for r in out["low_llh_train"]}
    assert all(math.isfinite(r["llh_mean"]) for r in out["rand_llh_train"])
    assert out == sft_select.select_subsets(pool, 2, seed=0)
    draws = {tuple(r["question"] for r in sft_select.select_subsets(pool, 2, seed=s)["rand_llh_train"])
             for s in range(10)}
    assert len(draws) > 1
    for size in (0, 4):
        with pytest.raises(ValueError, match="size"):
            sft_select.select_subsets(pool, size)


# ---- paraphrase ------------------------------------------------------------------------
def test_paraphrase_reorders_independent_steps_and_adds_connectives():
    text = "Ann has 3 apples.\nBob has 4 pears.\nSo together they have 3+4 = <<3+4=7>>7 fruits.\n#### 7"
    assert sft_select.paraphrase(text) == ("First, Bob has 4 pears.\nNext, Ann has 3 apples.\n"
                                           "In the end, together they have 3+4 = 7 fruits.\n#### 7")
    chained = "Ann has 3 apples.\nShe buys 3 more, so 6.\nShe eats 1: 5.\n#### 5"  # steps share numbers: no swap
    assert sft_select.paraphrase(chained, connectives=False) == chained
    assert sft_select.paraphrase("It is 5.\n#### 5") == "In short, it is 5.\n#### 5"
    assert sft_select.paraphrase(text) == sft_select.paraphrase(text)
    with pytest.raises(ValueError):
        sft_select.paraphrase("no final answer")


def test_paraphrase_changes_every_bundled_solution_and_keeps_its_answer():
    from helpers.steps import solution_steps

    for row in data.load_gsm8k_rows("train", "bundled", n=500):
        out = sft_select.paraphrase(row["answer"])
        assert data.extract_gold(out) == data.extract_gold(row["answer"])
        assert out != "\n".join(solution_steps(row["answer"])) + f"\n#### {data.extract_gold(row['answer'])}"
        assert sorted(n.value for n in data.scan_numbers(out)) == \
            sorted(n.value for n in data.scan_numbers(data.format_solution(row["answer"])))  # same numbers


# ---- typed pool, dynamics, JSON ----------------------------------------------------------
def test_typed_pool_kinds_counts_and_format(char_tok):
    rows = data.load_gsm8k_rows("train", "bundled", n=6)
    subsets = {"high_llh_train": rows[:3], "low_llh_train": rows[3:6]}
    own = pd.DataFrame({"question": ["Q1", "Q2", "Q3"], "completion": ["mine", "", None]})
    pool = sft_select.typed_pool(char_tok, subsets, rows[:2], own, n=2)
    kinds = [it["kind"] for it in pool]
    assert kinds == ["high_llh_train"] * 2 + ["low_llh_train"] * 2 + ["heldout_ref"] * 2 + ["student_answer"] + \
        ["paraphrase"] * 2
    assert all(set(it) == {"kind", "context", "target"} for it in pool)
    assert pool[0]["context"] == logprob.prompt_text(char_tok, data.make_prompt(rows[0]["question"]))
    assert pool[0]["target"] == data.format_solution(rows[0]["answer"])
    assert pool[6]["target"] == "mine"
    assert pool[7]["target"] == data.format_solution(sft_select.paraphrase(rows[0]["answer"]))
    alt = sft_select.typed_pool(char_tok, {}, [], None, n=1, paraphrase_rows=rows[4:])
    assert [it["kind"] for it in alt] == ["paraphrase"]


def test_dynamics_record_per_kind_and_dynamics_stats_unchanged(char_tok, monkeypatch):
    def fake_stats(model, encoded, *, pad_id=0, batch_size=4, chunk=256):
        return [([-1.0] * (len(ids) - first), [0.5] * (len(ids) - first)) for ids, first in encoded]

    monkeypatch.setattr(dynamics, "target_token_stats", fake_stats)
    pool = [{"kind": "a", "context": "ctx", "target": "xy"}, {"kind": "a", "context": "ctx", "target": "wxyz"},
            {"kind": "b", "context": "c", "target": "q"}]
    rec = sft_select.dynamics_record(None, char_tok, pool)
    assert rec == {"a": {"loglik": -3.0, "ppl": pytest.approx(math.e), "entropy": 0.5, "tokens": 3.0},
                   "b": {"loglik": -1.0, "ppl": pytest.approx(math.e), "entropy": 0.5, "tokens": 1.0}}
    assert list(dynamics.dynamics_stats(None, char_tok, pool)) == ["a/loglik", "a/ppl", "a/entropy", "b/loglik",
                                                                   "b/ppl", "b/entropy"]


def test_slm_json_shape_missing_types_and_atomic_write(tmp_path):
    rec0 = {"high": {"loglik": -10.0, "ppl": 3.0, "entropy": 1.0, "tokens": 5.0}}
    rec1 = {"high": {"loglik": -8.0, "ppl": float("inf"), "entropy": 0.9, "tokens": 5.0},
            "para": {"loglik": -9.0, "ppl": 2.5, "entropy": 1.1, "tokens": 6.0}}
    out = sft_select.slm_json([0, 10], [rec0, rec1])
    assert out == {"steps": [0, 10], "results_by_type": {
        "high": {"avg_perplexity": [3.0, float("inf")], "avg_log_likelihood": [-10.0, -8.0],
                 "avg_token_count": [5.0, 5.0], "avg_entropy": [1.0, 0.9]},
        "para": {"avg_perplexity": [None, 2.5], "avg_log_likelihood": [None, -9.0], "avg_token_count": [None, 6.0],
                 "avg_entropy": [None, 1.1]}}}
    assert sft_select.slm_json([], []) == {"steps": [], "results_by_type": {}}
    with pytest.raises(ValueError):
        sft_select.slm_json([0], [])
    path = sft_select.write_slm_json(tmp_path / "sub" / "dynamics.json", [0, 10], [rec0, rec1])
    back = json.loads(path.read_text())
    assert back["results_by_type"]["high"]["avg_perplexity"] == [3.0, None]  # inf -> null, strict JSON
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


# ---- the real model ---------------------------------------------------------------------
@pytest.mark.slow
def test_score_select_and_record_on_the_real_model(smol, tmp_path):
    model, tok = smol
    rows = data.load_gsm8k_rows("train", "bundled", n=4)
    pool = sft_select.score_pool(model, tok, rows)
    for r, p in zip(rows, pool):
        lp = logprob.score_targets(model, tok, [logprob.prompt_text(tok, data.make_prompt(r["question"]))],
                                   [data.format_solution(r["answer"])])[0]
        assert p["tokens"] == len(lp) and p["llh_mean"] == pytest.approx(sum(lp) / len(lp), abs=1e-4)
    subsets = sft_select.select_subsets(pool, 1)
    assert subsets["high_llh_train"][0]["llh_mean"] == max(p["llh_mean"] for p in pool)
    own = pd.DataFrame({"question": [rows[2]["question"]], "completion": ["<reasoning>\n2\n</reasoning>"]})
    typed = sft_select.typed_pool(tok, subsets, rows[2:], own, n=1)
    rec = sft_select.dynamics_record(model, tok, typed)
    assert list(rec) == [*sft_select.SUBSET_NAMES, "heldout_ref", "student_answer", "paraphrase"]
    assert all(math.isfinite(v) for st in rec.values() for v in st.values())
    high = rec["high_llh_train"]
    assert high["loglik"] == pytest.approx(subsets["high_llh_train"][0]["llh_sum"], abs=1e-3)
    assert high["tokens"] == subsets["high_llh_train"][0]["tokens"]
    out = json.loads(sft_select.write_slm_json(tmp_path / "d.json", [0], [rec]).read_text())
    assert out["results_by_type"]["paraphrase"]["avg_token_count"] == [rec["paraphrase"]["tokens"]]
