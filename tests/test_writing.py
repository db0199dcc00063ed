"""Notebook 04's writing task: plan extraction, the writing reward (no plan, empty plan, plan over the
limit), VR-CLI bucketing, the held-out split of the bundled stories, evaluation metrics and the judge."""
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import config, logprob, rewards, writing
from helpers.config import ConfigError

REF = "Then Mia found the red kite in the old oak tree. She climbed down and ran home to show her brother."
OPENING = "Mia lost her red kite on a windy day. She looked everywhere in the park."


# ---- plans ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, plan, status", [
    ("<reasoning>\n- find kite\n</reasoning>\n<answer>\nstory\n</answer>", "- find kite", "ok"),
    ("<reasoning>\n- find kite\n<answer>\nstory", "- find kite", "unclosed"),
    ("<reasoning>\n- find kite", "- find kite", "unclosed"),
    ("- find kite\n<answer>\nstory\n</answer>", "- find kite", "untagged"),
    ("Mia found it.", "Mia found it.", "untagged"),
    ("<answer>\nstory\n</answer>", "", "missing"),
    ("", "", "missing"),
    ("<reasoning>\n\n</reasoning>\n<answer>\nstory\n</answer>", "", "empty"),
    ("<reasoning>a</answer></reasoning>", "a</answer>", "ok"),
])
def test_extract_plan(text, plan, status):
    assert writing.extract_plan(text) == (plan, status)


@pytest.mark.parametrize("text, story", [
    ("<reasoning>\np\n</reasoning>\n<answer>\nThe end.\n</answer>", "The end."),
    ("<reasoning>\np\n</reasoning>\n<answer>\nThe end", "The end"),  # truncated generation
    ("<reasoning>\np\n</reasoning>\nThe end.", "The end."),
    ("<reasoning>\np never closed", ""),
    ("Just a story.", "Just a story."),
])
def test_extract_continuation(text, story):
    assert writing.extract_continuation(text) == story


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", "plan", " ", "é"]),
                max_size=30).map("".join) | st.text(max_size=300))
def test_plan_and_story_parsers_never_raise(text):
    plan, status = writing.extract_plan(text)
    assert isinstance(plan, str) and status in ("ok", "unclosed", "untagged", "missing", "empty")
    assert isinstance(writing.extract_continuation(text), str)


@pytest.mark.parametrize("bad", [None, 3, {"content": None}, [{"role": "assistant"}]])
def test_parsers_accept_non_strings(bad):
    assert writing.extract_plan(bad) == ("", "missing")
    assert writing.extract_continuation(bad) == ""


def test_plan_context_differs_only_by_the_plan():
    p = "PROMPT "
    assert writing.plan_context(p, "") == "PROMPT <reasoning>\n</reasoning>\n<answer>\n"
    assert writing.plan_context(p, "- a") == "PROMPT <reasoning>\n- a\n</reasoning>\n<answer>\n"


def test_limit_plan_cuts_long_plans_only(smol):
    _, tok = smol
    short = "- Mia looks in the tree."
    assert writing.limit_plan(short, tok, 64) == (short, False, len(tok(short, add_special_tokens=False)["input_ids"]))
    long = " ".join(["- Mia looks in the tree and finds the kite."] * 20)
    cut, was_cut, n = writing.limit_plan(long, tok, 16)
    assert was_cut and n > 16 and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 17  # decode/re-encode
    assert long.startswith(cut[:20])
    assert writing.limit_plan("", tok, 8) == ("", False, 0)


# ---- VR-CLI -----------------------------------------------------------------------------
@pytest.mark.parametrize("improvement, level", [
    (-50.0, 0.0), (0.0, 0.0), (0.049, 0.0), (0.05, 0.5), (0.99, 0.5), (1.0, 0.9), (1.99, 0.9), (2.0, 1.0),
    (99.0, 1.0), (float("nan"), 0.0), (float("-inf"), 0.0),
])
def test_vrcli_bucketing(improvement, level):
    assert writing.vrcli_bucket(improvement) == level


def test_vrcli_custom_levels_and_bad_configuration():
    assert writing.vrcli_bucket(7.0, thresholds=(5, 10), levels=(0, 0.5, 1)) == 0.5
    with pytest.raises(ConfigError):
        writing.vrcli_bucket(1.0, thresholds=(2, 1), levels=(0, 0.5, 1))
    with pytest.raises(ConfigError):
        writing.vrcli_bucket(1.0, thresholds=(1, 2), levels=(0, 1))


def test_relative_improvement():
    assert writing.relative_improvement(-2.0, -2.0) == 0.0
    # PPL exp(2) -> exp(1.9): 100·(1 − e^−0.1) ≈ 9.52 %
    assert writing.relative_improvement(-1.9, -2.0) == pytest.approx(100 * (1 - math.exp(-0.1)))
    assert writing.relative_improvement(-3.0, -2.0) < 0
    assert math.isfinite(writing.relative_improvement(-900.0, -1.0))  # huge loss: finite, very negative
    assert writing.relative_improvement(0.0, -50.0) <= 100
    assert math.isnan(writing.relative_improvement(float("nan"), -1.0))


# ---- the reward on the real model ---------------------------------------------------------
def _call(reward, completions, ref=REF):
    prompt = writing.make_prompt(OPENING)
    return reward(prompts=[prompt] * len(completions), completions=completions, answer=[ref] * len(completions))


@pytest.mark.slow
def test_no_plan_and_empty_plan_score_as_the_empty_plan(smol):
    model, tok = smol
    no_plan = "<answer>\nThey found it.\n</answer>"
    empty = "<reasoning>\n</reasoning>\n<answer>\nThey found it.\n</answer>"
    mean = writing.writing_reward(model, tok, "mean")
    r_none, r_empty = _call(mean, [no_plan, empty])
    stats = mean.stats.flush()
    baseline = writing.score_plans(model, tok, [logprob.prompt_text(tok, writing.make_prompt(OPENING))], [""], [REF])[0]
    assert r_none == pytest.approx(baseline, abs=1e-5) and r_empty == pytest.approx(baseline, abs=1e-5)
    assert stats["writing_mean/plan_missing_frac"] == 1.0 and stats["writing_mean/improvement_pct"] == pytest.approx(0, abs=1e-3)
    vr = writing.writing_reward(model, tok, "vrcli")
    assert _call(vr, [no_plan, empty]) == [0.0, 0.0]  # improvement exactly 0: lowest level


@pytest.mark.slow
def test_plan_over_the_limit_is_cut_and_flagged(smol):
    model, tok = smol
    long_plan = " ".join(["- Mia climbs the old oak tree and finds the red kite."] * 30)
    reward = writing.writing_reward(model, tok, "mean", max_plan_tokens=24)
    got = _call(reward, [f"<reasoning>\n{long_plan}\n</reasoning>\n<answer>\nx\n</answer>"])[0]
    stats = reward.stats.flush()
    cut, was_cut, n = writing.limit_plan(long_plan, tok, 24)
    expected = writing.score_plans(model, tok, [logprob.prompt_text(tok, writing.make_prompt(OPENING))], [cut], [REF])[0]
    assert was_cut and got == pytest.approx(expected, abs=1e-5)
    assert stats["writing_mean/plan_truncated_frac"] == 1.0 and stats["writing_mean/plan_tokens"] == n > 24


@pytest.mark.slow
def test_an_informative_plan_beats_no_plan(smol):
    model, tok = smol
    good = f"<reasoning>\n- {REF}\n</reasoning>\n<answer>\nx\n</answer>"  # a plan that tells the future
    off = "<reasoning>\n- A spaceship lands on the moon and robots dance.\n</reasoning>\n<answer>\nx\n</answer>"
    mean = writing.writing_reward(model, tok, "mean")
    r_good, r_off, r_none = _call(mean, [good, off, "<answer>\nx\n</answer>"])
    assert r_good > r_none and r_good > r_off
    vr = writing.writing_reward(model, tok, "vrcli")
    assert _call(vr, [good])[0] == 1.0


@pytest.mark.slow
def test_reward_is_defined_on_bad_input(smol):
    model, tok = smol
    mean = writing.writing_reward(model, tok, "mean", no_tag=-5.0)
    weird = ["no tags at all", None, {"content": 3}, "<reasoning>" * 50, "é" * 2000]
    out = _call(mean, weird)
    assert len(out) == 5 and all(math.isfinite(x) for x in out)
    assert out[0] == -5.0 and out[1] == -5.0  # untagged / missing plan: the constant
    # a missing reference (empty answer column) gets the floor, never an exception
    assert _call(writing.writing_reward(model, tok, "mean"), ["<reasoning>\np\n</reasoning>"], ref="") == [-20.0]


@pytest.mark.slow
def test_vrcli_scores_the_no_plan_baseline_once_per_story(smol, monkeypatch):
    model, tok = smol
    seen = []
    real = writing.reward.score_or_none

    def counting(m, t, contexts, *a, **k):
        seen.append(len(contexts))
        return real(m, t, contexts, *a, **k)

    monkeypatch.setattr(writing.reward, "score_or_none", counting)
    vr = writing.writing_reward(model, tok, "vrcli")
    comps = ["<reasoning>\n- Mia finds the kite.\n</reasoning>\n<answer>\nx\n</answer>"] * 2
    _call(vr, comps)
    _call(vr, comps)
    assert seen == [1, 2, 0, 2]  # the frozen scorer's no-plan score is cached across steps


def test_bad_reward_configuration_is_rejected_before_scoring():
    with pytest.raises(ConfigError):
        writing.writing_reward(None, None, "median")
    with pytest.raises(ConfigError):
        writing.writing_reward(None, None, "mean", scorer="judge")
    with pytest.raises(ConfigError):
        writing.writing_reward(None, None, "mean", max_plan_tokens=0)
    with pytest.raises(ConfigError):
        writing.writing_reward(None, None, "vrcli", thresholds=(1,), levels=(0, 0.5, 1))


# ---- data ---------------------------------------------------------------------------------
def test_bundled_stories_and_their_notice():
    rows = writing.load_bundled_stories()
    assert len(rows) >= 75
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["opening"] and r["continuation"] and r["plan"].startswith("- "), r["id"]
    notice = (writing.BUNDLED_STORIES.parent / "README.md").read_text()
    assert "CC0" in notice


def test_heldout_split_is_disjoint_deterministic_and_order_free():
    rows = writing.load_bundled_stories()
    train, held = writing.heldout_split(rows)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in held})
    assert len(train) + len(held) == len(rows) and len(held) >= 8
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert {r["id"] for r in writing.heldout_split(shuffled)[1]} == {r["id"] for r in held}
    # adding stories never moves an old one to the other side
    more = rows + [{"id": f"new{i}", "opening": "a", "continuation": "b"} for i in range(50)]
    assert {r["id"] for r in held} <= {r["id"] for r in writing.heldout_split(more)[1]}


def test_heldout_split_rejects_repeats_and_empty_sides():
    with pytest.raises(ConfigError, match="unique"):
        writing.heldout_split([{"id": "a"}, {"id": "a"}])
    with pytest.raises(ConfigError, match="non-empty"):
        writing.heldout_split([{"id": "x"}], eval_frac=0.0)


def test_sft_and_grpo_stories_are_disjoint():
    train, _ = writing.heldout_split(writing.load_bundled_stories())
    sft, grpo = writing.sft_grpo_split(train, cold_start=True)
    assert sft and grpo and {r["id"] for r in sft}.isdisjoint({r["id"] for r in grpo})
    assert writing.sft_grpo_split(train, cold_start=False) == ([], train)


def test_missing_and_corrupt_story_files(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        writing.load_bundled_stories(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "opening": "x", "continuation": "y"}) + "\n{not json\n")
    with pytest.raises(ConfigError, match=":2"):
        writing.load_bundled_stories(bad)
    bad.write_text(json.dumps({"id": "a", "opening": "x"}) + "\n")
    with pytest.raises(ConfigError, match="continuation"):
        writing.load_bundled_stories(bad)


def test_split_story_and_sentences():
    text = 'Tom had a dog. "Come here!" he said. The dog ran. It found a stick. Tom laughed. They went home.'
    assert writing.split_sentences(text)[1] == '"Come here!" he said.'
    opening, cont = writing.split_story(text, opening_frac=0.3)
    assert opening == 'Tom had a dog. "Come here!" he said.' and cont.startswith("The dog ran.")
    assert writing.split_story("One. Two. Three.") is None  # too short to split
    assert writing.split_story("") is None


def test_trim_to_tokens_keeps_whole_sentences(smol):
    _, tok = smol
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    out = writing.trim_to_tokens(text, tok, 30)
    assert len(tok(out, add_special_tokens=False)["input_ids"]) <= 30 and out.endswith(".")
    assert writing.trim_to_tokens("Short.", tok, 30) == "Short."
    assert len(tok(writing.trim_to_tokens("word " * 100, tok, 10), add_special_tokens=False)["input_ids"]) <= 11


def test_cold_start_targets_fit_and_are_well_formed(smol):
    _, tok = smol
    cfg = writing.writing_config("cpu")
    rows = writing.cold_start_rows(writing.load_bundled_stories()[:10], tok, cfg)
    assert len(rows) == 10
    for r in rows:
        assert len(tok(r["completion"], add_special_tokens=False)["input_ids"]) <= int(0.75 * cfg.max_completion_length) + 2
        assert rewards.strict_format_reward(completions=[r["completion"]]) == [rewards.FORMAT_REWARD]
        assert writing.extract_plan(r["completion"]) == (r["plan"], "ok")


# ---- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", config.PRESETS)
def test_writing_presets_validate(name):
    cfg = writing.writing_config(name)
    config.validate(cfg, gpu_available=True)
    assert cfg.max_plan_tokens < cfg.max_completion_length and cfg.run_name == "04_writing_mean"
    assert "writing_mean_reward" in cfg.reward_weights


def test_writing_config_errors():
    with pytest.raises(ConfigError, match="no room"):
        writing.writing_config("smoke", max_plan_tokens=64, max_completion_length=32)
    with pytest.raises(ConfigError, match="Unknown writing reward"):
        writing.writing_config("smoke", kind="bleu")
    with pytest.raises(ConfigError):
        config.validate(writing.writing_config("smoke", max_target_tokens=0))


# ---- evaluation metrics and the judge ------------------------------------------------------------
def test_distinct_n():
    assert writing.distinct_n(["a a a a"], 1) == 0.25
    assert writing.distinct_n(["the cat sat", "the cat ran"], 2) == 0.75
    assert math.isnan(writing.distinct_n([""], 2))


def test_judge_needs_both_orders_to_agree(monkeypatch):
    # scores come in groups of 4 per pair: (A, B) with `first` shown as A, then (A, B) with `first` shown as B
    table = {"always A": [-0.1, -3.0, -0.1, -3.0], "prefers first": [-0.1, -3.0, -3.0, -0.1],
             "prefers second": [-3.0, -0.1, -0.1, -3.0]}
    order = list(table)
    monkeypatch.setattr(writing.judge, "score_or_none", lambda *a, **k: [[x] for name in order for x in table[name]])

    class Tok:
        def apply_chat_template(self, chat, **k):
            return chat[0]["content"]

    got = writing.judge_preferences(None, Tok(), ["o"] * 3, ["x"] * 3, ["y"] * 3)
    assert list(got["verdict"]) == ["tie", "win", "loss"]  # position bias gives a tie, not a win
    assert "{opening}" in writing.JUDGE_PROMPT and "longer" in writing.JUDGE_PROMPT


def test_before_after_pairs_and_summary_from_a_per_story_table():
    import pandas as pd

    def table(plan, lp):
        return pd.DataFrame({"id": ["s1", "s2"], "opening": ["o1", "o2"], "reference": ["r1", "r2"],
                             "author_plan": ["- a", "- b"], "plan": [plan, ""], "plan_status": ["ok", "missing"],
                             "plan_tokens": [5, 0], "story": ["the cat sat", "the cat ran"], "story_words": [3, 3],
                             "lp_plan": [lp, -2.0], "lp_noplan": [-2.0, -2.0], "lp_plan_frozen": [lp, -2.0],
                             "lp_noplan_frozen": [-2.0, -2.0], "lp_author_plan": [-1.0, -1.0],
                             "improvement_pct": [writing.relative_improvement(lp, -2.0), 0.0],
                             "improvement_pct_frozen": [writing.relative_improvement(lp, -2.0), 0.0]})

    before, after = table("- p", -2.5), table("- q", -1.5)
    pairs = writing.before_after_pairs(before, after)
    assert list(pairs["plan_before"]) == ["- p", ""] and list(pairs["plan_after"]) == ["- q", ""]
    assert pairs["ppl_after"][0] == pytest.approx(math.exp(1.5), abs=1e-3)
    s = writing.summarize(after, "after")
    assert s["ppl_no_plan"] == pytest.approx(math.exp(2.0)) and s["ppl_author_plan"] == pytest.approx(math.e)
    assert s["plan_format_rate"] == 0.5 and s["plan_helps_frac"] == 0.5 and s["distinct_2"] == 0.75


def test_hub_stories_are_split_and_capped_without_downloading(monkeypatch):
    import datasets

    texts = ["Too short. Two.", "A had a cat. The cat ran. A ran too. They met Bo. Bo laughed. All went home.",
             "X saw a star. It fell down. X found it. It was warm. X kept it. The end came."]
    calls = []

    def fake_load_dataset(name, split, streaming):
        calls.append((name, split, streaming))
        return iter({"text": t} for t in texts * 10)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = writing.load_hub_stories("validation", 3)
    assert calls == [(writing.HUB_DATASET, "validation", True)]  # streamed: no full download
    assert len(rows) == 3 and all(r["opening"] and r["continuation"] and r["plan"] == "" for r in rows)
    assert rows[0]["id"] == "tinystories-validation-1"  # the unsplittable first story was skipped
    assert writing.sft_grpo_split(rows, cold_start=True) == ([], rows)  # no plans: no cold start


def test_cpu_writing_budget_is_the_cpu_learning_budget():
    cfg, base = writing.writing_config("cpu"), config.preset("cpu")
    for name in ("learning_rate", "beta", "max_steps", "save_steps"):
        assert getattr(cfg, name) == getattr(base, name), name
    for name in ("num_generations", "per_device_batch", "precision"):  # the shape its committed run was measured with
        assert getattr(cfg, name) == config.CPU_GSM8K_BUDGET[name], name
    assert cfg.save_steps < cfg.max_steps  # at least one checkpoint is probed between the start and the end


def test_writing_probe_reuses_the_evaluations_and_pairs_by_story(tmp_path, monkeypatch):
    import pandas as pd

    from helpers import probe

    exp = object.__new__(writing.WritingExperiment)
    exp.cfg, exp.is_main, exp.run_dir, exp.probes, exp.evals = writing.writing_config("smoke"), True, tmp_path, {}, {}
    calls = []

    def fake_evaluate(label, rows=None, *, reuse=True):
        calls.append(label)
        gain = {"after_sft": [-5.0, -3.0, float("nan")], "after": [-1.0, 0.0, 4.0]}[label]
        return {}, pd.DataFrame({"id": ["s1", "s2", "s3"], "improvement_pct": gain, "improvement_pct_frozen": gain,
                                 "lp_plan": [-2.0, -2.0, -2.0], "plan_tokens": [60, 50, 40],
                                 "plan_ok": [1.0, 1.0, 0.0]})

    monkeypatch.setattr(exp, "evaluate", fake_evaluate)
    exp.probe("start")
    exp.probe("end")
    exp.probe("end")  # cached in probe_end.csv: not evaluated again
    assert calls == ["after_sft", "after"]  # the start probe is the after-cold-start evaluation, not a new one
    tab = exp.probe_changes().set_index("metric")
    assert tab.loc["improvement_pct", "n"] == 2 and tab.loc["improvement_pct", "delta"] == pytest.approx(3.5)
    assert tab.loc["plan_tokens", "delta"] == 0.0 and tab.loc["plan_tokens", "verdict"] == "within noise"
    (tmp_path / "train_summary.json").write_text('{"steps": 25}')
    hist = exp.probe_history()
    assert list(hist["step"]) == [0, 25] and hist["plan_tokens"].tolist() == [50.0, 50.0]
    assert set(writing.PROBE_PANELS) <= set(writing.PROBE_METRICS) and list(probe.PROBE_METRICS)[0] == "format_rate"


# ---- story metrics (text only, CPU) and the KL remedy ------------------------------------------
def test_story_metrics_catch_loops_lost_names_and_cut_off_stories():
    opening = "Rufus was a small puppy. He loved to play tag with his boy, Leo. One day Aunt Rosa's cat came."
    assert writing.character_names(opening) == {"rufus", "leo", "rosa"}  # not "He", "One", "Aunt"; "Rosa's" -> rosa
    assert writing.names_kept(opening, "Leo hugged Rufus.") == pytest.approx(2 / 3)
    assert writing.names_kept(opening, "The dog slept.") == 0.0
    assert math.isnan(writing.names_kept("it was a dark day.", "Leo ran."))  # nobody named: undefined, not 0
    assert writing.repeat_3gram("the dog ran home") == 0.0
    looped = "the dog ran home the dog ran home the dog ran home"
    assert writing.repeat_3gram(looped) == pytest.approx(6 / 10)  # 10 trigrams, 4 distinct: 6 are repeats
    assert math.isnan(writing.repeat_3gram("too short"))
    assert writing.story_ended('He smiled. "Thank you!"') == 1.0 and writing.story_ended("and then the") == 0.0
    assert writing.story_ended("") == 0.0
    ref = "Rufus hid under the kitchen table while thunder boomed."
    assert writing.reference_recall(ref, "Rufus hid under the table.") == pytest.approx(2 / 5)  # of 5: rufus, table
    assert writing.reference_recall(ref, "A rocket flew to the moon.") == 0.0


def test_story_metrics_cannot_be_gamed_by_copying_the_plan_tags():
    # the plain run's failure: the "story" repeats the plan block; it loops and does not end a sentence
    story = "<reasoning>\n- Rufus was a small puppy.\n</reasoning>\n<reasoning>\n- Rufus was a small puppy.\n</reasoning>"
    assert writing.repeat_3gram(story) > 0.3 and writing.story_ended(story) == 0.0


def test_add_story_metrics_on_old_caches_and_frames_without_texts():
    import pandas as pd

    df = pd.DataFrame({"id": ["a", "b"], "opening": ["Mia had a kite.", "It rained."],
                       "reference": ["Mia flew the kite.", "The rain stopped."], "story": ["Mia flew it high.", ""]})
    out = writing.add_story_metrics(df)
    assert set(writing.STORY_METRICS.values()) <= set(out) and "repeat_3gram" not in df  # a copy
    assert out["names_kept"][0] == 1.0 and math.isnan(out["names_kept"][1]) and out["story_ended"].tolist() == [1.0, 0.0]
    no_text = pd.DataFrame({"id": ["a"], "plan_tokens": [3]})
    assert list(writing.add_story_metrics(no_text)) == ["id", "plan_tokens"]  # nothing to compute from: unchanged
    assert math.isnan(writing.add_story_metrics(df.drop(columns="reference"))["reference_recall"][0])


def test_remedy_is_the_same_run_plus_a_kl_term():
    cfg = writing.writing_config("cpu")
    kl = writing.remedy_config(cfg)
    assert kl.beta == writing.REMEDY_BETA == 0.1 and cfg.beta == 0.0 and kl.run_name == "04_writing_mean_kl0.1"
    same = {k for k in cfg.to_dict() if k not in ("beta", "run_name")}
    assert all(getattr(kl, k) == getattr(cfg, k) for k in same)  # one change only
    config.validate(kl)
    for bad in (0.0, -1, True, "0.1"):
        with pytest.raises(ValueError, match="stronger KL term"):
            writing.remedy_config(cfg, bad)
    t4 = writing.writing_config("t4")  # its plain run already has TRL's KL 0.04: the remedy must be above it
    assert t4.beta == 0.04 and writing.remedy_config(t4).beta == 0.1
    with pytest.raises(ValueError, match="above 0.04"):
        writing.remedy_config(t4, 0.04)


def test_compare_runs_pairs_the_same_stories():
    import pandas as pd

    def frame(plan_tokens, story):
        return pd.DataFrame({"id": ["s1", "s2", "s3"], "opening": ["Mia ran."] * 3, "reference": ["Mia ran home."] * 3,
                             "story": [story] * 3, "plan_tokens": plan_tokens, "lp_plan": [-2.0, -2.1, -2.2],
                             "plan_ok": [1.0] * 3, "improvement_pct": [0.0] * 3, "improvement_pct_frozen": [0.0] * 3})

    plain, kl = frame([10, 12, 14], "the the the the the the"), frame([40, 42, 44], "Mia ran home.")
    t = writing.compare_runs(plain, kl).set_index("metric")
    assert t.loc["plan_tokens", "delta"] == pytest.approx(30.0) and t.loc["plan_tokens", "verdict"] == "up"
    assert t.loc["story_ended", "delta"] == 1.0 and t.loc["repeat_3gram", "delta"] < 0
    assert list(t.columns[:2]) == ["plain GRPO", "with KL"] and (t["n"] == 3).all()
    with pytest.raises(ValueError, match="different questions"):
        writing.compare_runs(plain, kl.iloc[::-1].reset_index(drop=True))
