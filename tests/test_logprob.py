import math

import pytest
import torch

from helpers import data, logprob
from helpers.logprob import TRANSFORMS, apply_transform, score_targets


def naive_scores(model, tok, context, target):
    """Reference: full forward, full-vocabulary log-softmax at every position, joint tokenization."""
    ids, first = logprob.encode_pair(tok, context, target)
    with torch.no_grad():
        lp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return [lp[j - 1, ids[j]].item() for j in range(first, len(ids))]


@pytest.fixture(scope="module")
def group(smol):
    model, tok = smol
    rows = data.load_gsm8k_rows("train", "bundled", n=5)
    prompt = logprob.prompt_text(tok, data.make_prompt(rows[0]["question"]))
    comps = [data.format_solution(r["answer"]) for r in rows]
    pairs = [logprob.gold_context_target(prompt, c, "72") for c in comps]
    return [c for c, _, _ in pairs], [t for _, t, _ in pairs]


# ---- tokenization ---------------------------------------------------------------------
def test_boundary_token_straddling_context_and_target_is_scored_jointly(smol):
    model, tok = smol
    context, target = "My favourite word is hel", "lo world"
    joint = tok(context + target, add_special_tokens=False)["input_ids"]
    separate = tok(context, add_special_tokens=False)["input_ids"] + tok(target, add_special_tokens=False)["input_ids"]
    assert joint != separate, "pick a boundary where BPE merges across it"
    ids, first = logprob.encode_pair(tok, context, target)
    assert ids == joint
    assert tok.decode(ids[first:]).strip().startswith("hello"), "the straddling token counts as target"
    got = score_targets(model, tok, [context], [target])[0]
    assert got == pytest.approx(naive_scores(model, tok, context, target), abs=1e-4)


def test_long_context_is_cut_from_the_left_and_target_survives(smol):
    model, tok = smol
    context, target = "word " * 300, "the end"
    ids, first = logprob.encode_pair(tok, context, target, max_length=64)
    assert len(ids) == 64 and tok.decode(ids[first:]).strip() == "the end"
    lps = score_targets(model, tok, [context], [target], max_length=64)[0]
    assert len(lps) == len(ids) - first and all(math.isfinite(x) and x <= 0 for x in lps)
    with pytest.raises(ValueError, match="does not fit"):
        logprob.encode_pair(tok, "x", "word " * 100, max_length=16)


# ---- exactness of the fast paths ------------------------------------------------------
def test_fast_scorer_matches_naive_full_vocab(smol, group):
    model, tok = smol
    contexts, targets = group
    naive = [naive_scores(model, tok, c, t) for c, t in zip(contexts, targets)]
    for kwargs in (dict(batch_size=1), dict(batch_size=5), dict(batch_size=2, share_prefix=True)):
        fast = score_targets(model, tok, contexts, targets, **kwargs)
        for a, b in zip(fast, naive):
            assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, kwargs


def test_shared_prefix_really_uses_the_cache(smol, group, monkeypatch):
    """The prefix branch must run (a KV cache of the common prompt, repeated per batch), not fall back."""
    model, tok = smol
    contexts, targets = group
    calls = []
    real = logprob._repeat_cache

    def spy(cache, n):
        calls.append((cache.get_seq_length(), n))
        return real(cache, n)

    monkeypatch.setattr(logprob, "_repeat_cache", spy)
    shared = score_targets(model, tok, contexts, targets, batch_size=2, share_prefix=True, groups=["q"] * len(contexts))
    prompt_tokens = len(tok(contexts[0][: contexts[0].index("<reasoning>")], add_special_tokens=False)["input_ids"])
    assert calls and all(length >= prompt_tokens - 1 for length, _ in calls), calls
    assert sum(n for _, n in calls) == len(contexts)  # every sequence was scored on top of the cache
    plain = score_targets(model, tok, contexts, targets, batch_size=2)
    assert max(abs(x - y) for a, b in zip(shared, plain) for x, y in zip(a, b)) < 1e-4


def test_batched_equals_one_at_a_time(smol, group):
    model, tok = smol
    contexts, targets = group
    batched = score_targets(model, tok, contexts, targets, batch_size=8)
    single = [score_targets(model, tok, [c], [t], batch_size=1)[0] for c, t in zip(contexts, targets)]
    assert max(abs(x - y) for a, b in zip(batched, single) for x, y in zip(a, b)) < 1e-4


# ---- the reward function --------------------------------------------------------------
PROMPT = data.make_prompt("Tom has 3 apples and buys 4 more. How many apples does he have?")


@pytest.mark.parametrize("completion, tagged", [
    ("<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>", True),
    ("<reasoning>\n</reasoning>\n<answer>\n9\n</answer>", True),        # empty reasoning
    ("", False),                                                        # empty completion
    ("3 + 4 = 7 so he has seven apples", False),                        # no tags
    ("<reasoning>\n3 + 4 = 7 and then we trunc", False),                # truncated mid-reasoning
])
def test_reward_is_defined_for_every_completion_shape(smol, completion, tagged):
    model, tok = smol
    f = logprob.logprob_reward(model, tok, transform="sum")
    out = f(prompts=[PROMPT], completions=[[{"role": "assistant", "content": completion}]], answer=["7"])
    assert len(out) == 1 and math.isfinite(out[0]) and out[0] < 0
    stats = f.stats.flush()
    assert stats["logprob_sum/tagless"] == (0 if tagged else 1)


def test_own_answer_is_ignored_gold_is_scored(smol):
    model, tok = smol
    f = logprob.logprob_reward(model, tok, transform="sum")
    right = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
    wrong = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n12\n</answer>"
    a, b = f(prompts=[PROMPT] * 2, completions=[right, wrong], answer=["7", "7"])
    assert a == pytest.approx(b, abs=1e-5)


def test_tagless_completions_can_get_a_constant(smol):
    model, tok = smol
    f = logprob.logprob_reward(model, tok, transform="mean", no_tag=-5.0)
    out = f(prompts=[PROMPT] * 2, completions=["no tags", "<reasoning>\nx\n</reasoning>\n<answer>\n7\n</answer>"],
            answer=["7", "7"])
    assert out[0] == -5.0 and out[1] != -5.0


def test_debiased_subtracts_the_no_reasoning_score(smol):
    model, tok = smol
    comp = ["<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"]
    s = logprob.logprob_reward(model, tok, transform="sum")(prompts=[PROMPT], completions=comp, answer=["7"])[0]
    d = logprob.logprob_reward(model, tok, transform="debiased")(prompts=[PROMPT], completions=comp, answer=["7"])[0]
    p = logprob.prompt_text(tok, PROMPT)
    k = logprob.answer_token_count(tok, p + "<answer>\n", "7\n</answer>", len("7\n"))  # the reward's span
    base = sum(score_targets(model, tok, [p + "<answer>\n"], ["7\n</answer>"])[0][:k])
    assert d == pytest.approx(s - base, abs=1e-4)


def test_policy_and_reference_scorers_agree_then_differ(smol):
    model, tok = smol
    comp = ["<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"]
    pol = logprob.logprob_reward(model, tok, scorer="policy")
    ref = logprob.logprob_reward(model, tok, scorer="reference")
    assert pol(prompts=[PROMPT], completions=comp, answer=["7"]) == \
        pytest.approx(ref(prompts=[PROMPT], completions=comp, answer=["7"]), abs=1e-5)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in lora_b]
    try:
        with torch.no_grad():
            for p in lora_b:
                p.add_(torch.randn_like(p) * 0.05)
        a = pol(prompts=[PROMPT], completions=comp, answer=["7"])[0]
        b = ref(prompts=[PROMPT], completions=comp, answer=["7"])[0]
        assert abs(a - b) > 1e-3
    finally:
        with torch.no_grad():
            for p, s in zip(lora_b, saved):
                p.copy_(s)


def test_unknown_transform_and_scorer(smol):
    from helpers.config import ConfigError

    model, tok = smol
    with pytest.raises(ConfigError, match="transform"):
        logprob.logprob_reward(model, tok, transform="softmax")
    with pytest.raises(ConfigError, match="scorer"):
        logprob.logprob_reward(model, tok, scorer="judge")


# ---- transforms -----------------------------------------------------------------------
LPS = [-0.5, -1.0, -2.0]


@pytest.mark.parametrize("name, expected", [
    ("sum", -3.5),
    ("mean", -3.5 / 3),
    ("prob", math.exp(-3.5)),
    ("gmean_prob", math.exp(-3.5 / 3)),
    ("token_prob_mean", (math.exp(-0.5) + math.exp(-1.0) + math.exp(-2.0)) / 3),
    ("clip", -3.5),
])
def test_transforms_on_hand_made_vectors(name, expected):
    assert apply_transform(name, LPS) == pytest.approx(expected)


def test_clip_and_debiased():
    assert apply_transform("clip", [-30.0, -5.0], floor=-20.0) == -20.0
    assert apply_transform("debiased", LPS, base=[-4.0, -1.0]) == pytest.approx(-3.5 + 5.0)
    assert apply_transform("sum", [float("-inf")]) == logprob.DEFAULT_FLOOR  # never non-finite
    assert set(TRANSFORMS) == {"sum", "mean", "prob", "gmean_prob", "token_prob_mean", "debiased", "clip"}


# ---- the gold target: answer tokens beside the closing tag -------------------------------
def test_answer_tokens_are_counted_apart_from_the_closing_tag(smol):
    model, tok = smol
    prompt = data.make_prompt("Tom has 3 apples and buys 69 more. How many apples does he have?")
    comp = "<reasoning>\n3 + 69 = 72\n</reasoning>\n<answer>\n72\n</answer>"
    (lps, k), = logprob.gold_answer_split(model, tok, [prompt], [comp], ["72"])
    context, target, _ = logprob.gold_context_target(logprob.prompt_text(tok, prompt), comp, "72")
    ids, first = logprob.encode_pair(tok, context, target)
    assert tok.decode(ids[first:first + k]).strip() == "72" and "</answer>" in tok.decode(ids[first + k:])
    assert 1 <= k < len(lps) == len(ids) - first  # most of the target is the tag
    m = logprob.gold_metrics(model, tok, [prompt], [comp], ["72"])
    assert m["gold_answer_logprob"][0] == pytest.approx(sum(lps[:k])) and m["gold_logprob"][0] == pytest.approx(sum(lps))
    assert m["gold_answer_ppl"][0] == pytest.approx(math.exp(-sum(lps[:k]) / k))


@pytest.mark.parametrize("name", ["prob", "gmean_prob", "token_prob_mean"])
def test_probability_transforms_floor_inside_their_range(smol, name):
    model, tok = smol
    assert logprob.floor_for(name) == 0.0 and logprob.floor_for("sum") == logprob.DEFAULT_FLOOR
    assert apply_transform(name, [float("nan")]) == 0.0  # non-finite -> the in-range floor
    reward = logprob.logprob_reward(model, tok, name)
    # an unscorable completion: its target does not fit in max_length
    out = logprob.logprob_reward(model, tok, name, max_length=8)(
        prompts=[PROMPT, PROMPT], completions=["<answer>", "x"], answer=["7" * 40, "1" * 40])
    assert out == [0.0, 0.0]
    ok = reward(prompts=[PROMPT], completions=["<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"],
                answer=["7"])
    assert 0.0 <= ok[0] <= 1.0
    with pytest.raises(Exception, match=r"outside the range \[0, 1\]"):
        logprob.logprob_reward(model, tok, name, floor=-20.0)


# ---- the reward's span: the gold answer and the newline that ends it, not the closing tag --------------
@pytest.mark.parametrize("gold", ["72", "7", "1234", "-3", "0.5"])
def test_answer_span_is_a_prefix_of_the_emitted_target_tokens(smol, gold):
    """The default reward scores the gold answer's tokens plus the newline after it, sliced from the one joint
    tokenization of context + "{gold}\n</answer>": exactly the first tokens the model would emit, never the tag."""
    model, tok = smol
    comp = f"<reasoning>\nso the answer is {gold}\n</reasoning>\n<answer>\n{gold}\n</answer>"
    context, target, _ = logprob.gold_context_target(logprob.prompt_text(tok, PROMPT), comp, gold)
    ids, first = logprob.encode_pair(tok, context, target)
    full = score_targets(model, tok, [context], [target])[0]
    k = logprob.span_token_count(tok, context, target, gold, "answer")
    assert tok.decode(ids[first:first + k]) == f"{gold}\n" and "</answer>" not in tok.decode(ids[first:first + k])
    assert 1 <= k < len(full)  # the tag is left out
    assert logprob.span_token_count(tok, context, target, gold, "target") is None
    for transform in ("sum", "mean"):
        ans = logprob.logprob_reward(model, tok, transform=transform)(prompts=[PROMPT], completions=[comp], answer=[gold])[0]
        whole = logprob.logprob_reward(model, tok, transform=transform, span="target")(
            prompts=[PROMPT], completions=[comp], answer=[gold])[0]
        assert ans == pytest.approx(apply_transform(transform, full[:k]), abs=1e-4)
        assert whole == pytest.approx(apply_transform(transform, full), abs=1e-4)


def test_tag_tokens_do_not_move_the_answer_span_reward(smol):
    """Gamed in both directions: a completion whose closing tag is near-certain gets no credit for it under
    span "answer" (the reward equals the answer tokens' own log-prob), while span "target" adds the tag's."""
    model, tok = smol
    comp = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
    context, target, _ = logprob.gold_context_target(logprob.prompt_text(tok, PROMPT), comp, "7")
    full = score_targets(model, tok, [context], [target])[0]
    k = logprob.span_token_count(tok, context, target, "7", "answer")
    ans = logprob.logprob_reward(model, tok, transform="sum")(prompts=[PROMPT], completions=[comp], answer=["7"])[0]
    whole = logprob.logprob_reward(model, tok, transform="sum", span="target")(prompts=[PROMPT], completions=[comp],
                                                                                  answer=["7"])[0]
    assert whole - ans == pytest.approx(sum(full[k:]), abs=1e-4) and sum(full[k:]) < 0


def test_unknown_span(smol):
    from helpers.config import ConfigError

    model, tok = smol
    with pytest.raises(ConfigError, match="span"):
        logprob.logprob_reward(model, tok, span="tag")


def test_diagnostics_score_the_span_the_reward_trains_on(smol):
    """evaluation.add_logprob_scores (AUROC, sample browser) and trace_probe read the reward's own span."""
    import pandas as pd

    from helpers import evaluation

    model, tok = smol
    comp = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
    samples = pd.DataFrame({"question": ["Tom has 3 apples and buys 4 more. How many apples does he have?"],
                            "completion": [comp], "gold": ["7"], "tag_style": ["reasoning"]})
    evaluation.add_logprob_scores(model, tok, samples)
    for name in ("sum", "mean"):
        reward = logprob.logprob_reward(model, tok, transform=name)(prompts=[PROMPT], completions=[comp], answer=["7"])
        assert samples[f"logprob_{name}"][0] == pytest.approx(reward[0], abs=1e-4)
    (lp, n_answer, n_span), = logprob.gold_target_scores(model, tok, [PROMPT], [comp], ["7"])
    assert n_answer < n_span < len(lp) and samples["answer_logprob"][0] == pytest.approx(sum(lp[:n_answer]), abs=1e-5)
    curve = evaluation.trace_probe(model, tok, "Tom has 3 apples and buys 4 more. How many apples does he have?",
                                   comp, "7")
    lines = data.split_reasoning(comp)[0].split("\n")
    last = "\n".join(lines) + "\n"  # trace_probe's last prefix: every reasoning line
    assert curve[-1][1] == pytest.approx(sum(logprob.reward_span_logprobs(model, tok, [PROMPT], [last], ["7"])[0]),
                                         abs=1e-4)
