"""Creative writing (notebook 04): plan, then continue a story; reward = how likely the plan makes a reference.

The task: the model reads the opening of a story, writes a plan inside `<reasoning>` and the rest of
the story inside `<answer>`. As in notebook 02, the model's own answer is dropped: the reward scores
the *reference* continuation y given the prompt x and the plan a,

    mean  (default)  R = (1/|y|) Σ log P(y_t | x, a, y_<t)       mean token log-prob: references differ in length
    vrcli            I = 100 · (1 − PPL(y | x, a) / PPL(y | x))  relative perplexity improvement over no plan,
                     scored by the frozen model, then bucketed into a few levels (VR-CLI, Gurung & Lapata 2025)

Plans are read from the completion (`extract_plan`), cut to `max_plan_tokens`, and re-inserted into one
canonical context, so "no plan", "empty plan" and a real plan differ only by the plan's text:
    prompt + "<reasoning>\\n" + plan + "\\n</reasoning>\\n<answer>\\n"     (empty plan: no blank line)

Data: bundled short stories written for this project (CC0, offline) or TinyStories from the hub (Colab),
split into a training set and a held-out set by a hash of each story's id.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from . import pipeline, plots
from .config import ConfigError, RunConfig
from .data import ANSWER_CLOSE, ANSWER_OPEN, REASONING_CLOSE, REASONING_OPEN, completion_text
from .logprob import RewardStats, score_or_none, prompt_text, reward_inputs, scorer_scope

BUNDLED_STORIES = Path(__file__).parent / "data_files" / "stories" / "stories.jsonl"
HUB_DATASET = "roneneldan/TinyStories"  # license: CDLA-Sharing-1.0 (dataset card); synthetic stories by GPT-3.5/4
HUB_LICENSE = "CDLA-Sharing-1.0"

WRITING_SYSTEM_PROMPT = (
    "You continue stories. First plan the rest of the story in a few short notes, then write it.\n"
    "Respond in the following format:\n"
    "<reasoning>\n...\n</reasoning>\n"
    "<answer>\n...\n</answer>"
)
USER_TEMPLATE = "Continue this story.\n\n{opening}"

# VR-CLI reward levels: improvement (percent) below 0.05 -> 0, [0.05, 1) -> 0.5, [1, 2) -> 0.9, >= 2 -> 1.0.
VRCLI_THRESHOLDS = (0.05, 1.0, 2.0)
VRCLI_LEVELS = (0.0, 0.5, 0.9, 1.0)
KINDS = ("mean", "vrcli")

# Per preset: what the writing task changes on top of config.preset() (longer prompts and completions).
WRITING_OVERRIDES = {
    "smoke": dict(max_prompt_length=256, max_completion_length=32, eval_max_new_tokens=32, max_plan_tokens=16,
                  max_target_tokens=48, train_size=8, eval_size=3, sft_steps=2),
    "cpu": dict(max_prompt_length=256, max_completion_length=160, eval_max_new_tokens=200, max_plan_tokens=64,
                max_target_tokens=160, train_size=None, eval_size=30, eval_batch_size=8, sft_steps=30,
                max_steps=30, save_steps=10, learning_rate=5e-5),  # 2.5x notebook 01's: 30 steps move little
    "t4": dict(max_prompt_length=512, max_completion_length=512, eval_max_new_tokens=512, max_plan_tokens=192,
               max_target_tokens=384, train_size=5000, eval_size=100, max_steps=300, sft_steps=0),
    "a100": dict(max_prompt_length=512, max_completion_length=768, eval_max_new_tokens=768, max_plan_tokens=256,
                 max_target_tokens=512, train_size=20000, eval_size=200, max_steps=500, sft_steps=0),
}


def writing_weights(kind: str = "mean", weight: float = 1.0, format_weight: float = 0.05) -> dict[str, float]:
    """Reward weights: the writing reward, plus the two format rewards as a small nudge.

    The mean token log-prob of the reference differs by a few hundredths of a nat between the plans of
    one group (within-group std ~0.03 on the cpu preset, measured); format rewards of 0.5 at weight 1 would
    swamp it under std-scaled advantages (notebook 03). At 0.05 a format difference (0.025) is about
    one standard deviation of the writing reward.
    """
    if kind not in KINDS:
        raise ConfigError(f"Unknown writing reward {kind!r}. Choose one of {list(KINDS)}.")
    return {"strict_format_reward": format_weight, "soft_format_reward": format_weight, f"writing_{kind}_reward": weight}


def writing_config(preset_name: str, kind: str = "mean", **overrides) -> RunConfig:
    """The named preset with the writing task's lengths and weights (run directory 04_writing_<kind>)."""
    from . import config

    base = dict(WRITING_OVERRIDES.get(preset_name, {}), run_name=f"04_writing_{kind}",
                reward_weights=writing_weights(kind))
    cfg = config.preset(preset_name, **{**base, **overrides})
    if cfg.max_plan_tokens >= cfg.max_completion_length:
        raise ConfigError(f"max_plan_tokens={cfg.max_plan_tokens} leaves no room for the story in "
                          f"max_completion_length={cfg.max_completion_length}. Lower max_plan_tokens.")
    return cfg


# ---------------------------------------------------------------------------------------
# Data
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")  # '"Hi!" he said.' is one


def split_sentences(text: str) -> list[str]:
    """Sentences of a plain story text: split after . ! ? (and a closing quote) before a capital letter."""
    text = re.sub(r"\s+", " ", text or "").strip()
    if not text:
        return []
    parts, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        parts.append(text[start:m.end()].strip())
        start = m.end()
    if start < len(text):
        parts.append(text[start:].strip())
    return [p for p in parts if p]


def split_story(text: str, opening_frac: float = 0.3, min_opening: int = 2,
                min_continuation: int = 3) -> tuple[str, str] | None:
    """(opening, continuation) cut at a sentence boundary, or None when the story is too short to split."""
    sents = split_sentences(text)
    if len(sents) < min_opening + min_continuation:
        return None
    k = min(max(min_opening, round(len(sents) * opening_frac)), len(sents) - min_continuation)
    return " ".join(sents[:k]), " ".join(sents[k:])


def trim_to_tokens(text: str, tokenizer, max_tokens: int) -> str:
    """The longest prefix of whole sentences within `max_tokens` tokens (a hard token cut if even the
    first sentence is longer)."""
    if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
        return text
    kept = ""
    for sent in split_sentences(text):
        candidate = f"{kept} {sent}".strip()
        if len(tokenizer(candidate, add_special_tokens=False)["input_ids"]) > max_tokens:
            break
        kept = candidate
    if kept:
        return kept
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return tokenizer.decode(ids)


def is_heldout(story_id: str, eval_frac: float = 0.2, salt: str = "heldout-v1") -> bool:
    """Deterministic membership in the held-out set, from a hash of the id: independent of order and
    of which other stories exist, so adding stories never moves an old one between the splits."""
    digest = hashlib.sha256(f"{salt}:{story_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 10_000 < eval_frac * 10_000


def heldout_split(rows: Sequence[dict], eval_frac: float = 0.2) -> tuple[list[dict], list[dict]]:
    """(train, heldout) by `is_heldout`; raises when either side would be empty or ids repeat."""
    ids = [r["id"] for r in rows]
    dup = sorted(k for k, v in Counter(ids).items() if v > 1)
    if dup:
        raise ConfigError(f"Story ids must be unique; repeated: {dup[:5]}")
    train = [r for r in rows if not is_heldout(r["id"], eval_frac)]
    held = [r for r in rows if is_heldout(r["id"], eval_frac)]
    if not train or not held:
        raise ConfigError(f"Splitting {len(rows)} stories with eval_frac={eval_frac} left "
                          f"{len(train)} for training and {len(held)} held out; both must be non-empty.")
    return train, held


def load_bundled_stories(path: str | Path = BUNDLED_STORIES) -> list[dict]:
    """The bundled stories: {'id', 'title', 'opening', 'continuation', 'plan', 'source'} per row."""
    from .data import read_jsonl

    def parse(row: dict) -> dict:
        story = {"id": str(row["id"]), "title": row.get("title", ""), "opening": row["opening"].strip(),
                 "continuation": row["continuation"].strip(), "plan": row.get("plan", "").strip(),
                 "source": "bundled"}
        if not story["opening"] or not story["continuation"]:
            raise ValueError("empty opening or continuation")
        return story

    return read_jsonl(path, "stories file", parse)


def load_hub_stories(split: str, n: int, opening_frac: float = 0.3) -> list[dict]:
    """The first `n` splittable TinyStories of `split` ('train' or 'validation'), streamed (no full download)."""
    from datasets import load_dataset

    stream = load_dataset(HUB_DATASET, split=split, streaming=True)
    rows = []
    for i, ex in enumerate(stream):
        parts = split_story(ex["text"], opening_frac)
        if parts:
            rows.append({"id": f"tinystories-{split}-{i}", "title": "", "opening": parts[0],
                         "continuation": parts[1], "plan": "", "source": HUB_DATASET})
        if len(rows) >= n:
            break
    return rows


def load_for_run(cfg: RunConfig, tokenizer=None) -> tuple[list[dict], list[dict]]:
    """(train stories, held-out stories) for a run; continuations trimmed to cfg.max_target_tokens."""
    from .data import resolve_source

    if resolve_source(cfg.dataset_source) == "hub":
        train = load_hub_stories("train", cfg.train_size or 5000)
        held = load_hub_stories("validation", cfg.eval_size)  # TinyStories' own held-out split
    else:
        train, held = heldout_split(load_bundled_stories())
        train = train[: cfg.train_size] if cfg.train_size else train
        held = held[: cfg.eval_size]
    if tokenizer is not None:
        for r in train + held:
            r["continuation"] = trim_to_tokens(r["continuation"], tokenizer, cfg.max_target_tokens)
    return train, held


def make_prompt(opening: str, system_prompt: str = WRITING_SYSTEM_PROMPT) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": USER_TEMPLATE.format(opening=opening)}]


def format_example(plan: str, continuation: str) -> str:
    """A completion in the task's format (the cold start's target)."""
    return f"{REASONING_OPEN}\n{plan}\n{REASONING_CLOSE}\n{ANSWER_OPEN}\n{continuation}\n{ANSWER_CLOSE}"


def grpo_dataset(rows: Sequence[dict]):
    """TRL dataset: chat `prompt`, the reference continuation as `answer` (what the reward scores)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": make_prompt(r["opening"]), "answer": r["continuation"],
                               "story_id": r["id"]} for r in rows])


def sft_dataset(rows: Sequence[dict]):
    """Prompt/completion pairs for the cold start (rows carry a ready `completion`)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": make_prompt(r["opening"]),
                               "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])


# ---------------------------------------------------------------------------------------
# Plans
def extract_plan(text: str) -> tuple[str, str]:
    """(plan, status) from a completion. Never raises.

    status: "ok" (closed reasoning block), "unclosed" (reasoning opened, never closed: text up to <answer>
    or the end), "untagged" (no reasoning tag: the text before <answer>, or all of it), "missing" (no plan
    text at all), "empty" (a reasoning block with nothing in it).
    """
    text = completion_text(text)
    i = text.find(REASONING_OPEN)
    if i >= 0:
        body = text[i + len(REASONING_OPEN):]
        ends = [j for j in (body.find(REASONING_CLOSE), body.find(ANSWER_OPEN)) if j >= 0]
        closed = body.find(REASONING_CLOSE) >= 0 and body.find(REASONING_CLOSE) == min(ends)
        plan = body[:min(ends)] if ends else body
        plan = plan.strip()
        return plan, ("ok" if closed else "unclosed") if plan else "empty"
    j = text.find(ANSWER_OPEN)
    plan = (text[:j] if j >= 0 else text).strip()
    return plan, "untagged" if plan else "missing"


def extract_continuation(text: str) -> str:
    """The story the model wrote: inside <answer> (closed or not); untagged text counts as the story."""
    text = completion_text(text)
    i = text.find(ANSWER_OPEN)
    if i >= 0:
        body = text[i + len(ANSWER_OPEN):]
        j = body.find(ANSWER_CLOSE)
        return (body[:j] if j >= 0 else body).strip()
    k = text.find(REASONING_CLOSE)
    if k >= 0:
        return text[k + len(REASONING_CLOSE):].strip()
    return "" if REASONING_OPEN in text else text.strip()


def limit_plan(plan: str, tokenizer, max_tokens: int) -> tuple[str, bool, int]:
    """(plan cut to `max_tokens` tokens, whether it was cut, its token count before cutting)."""
    ids = tokenizer(plan, add_special_tokens=False)["input_ids"] if plan else []
    if len(ids) <= max_tokens:
        return plan, False, len(ids)
    return tokenizer.decode(ids[:max_tokens]).strip(), True, len(ids)


def plan_context(prompt_str: str, plan: str) -> str:
    """The canonical scoring context: prompt, the plan in its block, the answer tag. Empty plan: no blank line."""
    inner = f"{plan}\n" if plan else ""
    return f"{prompt_str}{REASONING_OPEN}\n{inner}{REASONING_CLOSE}\n{ANSWER_OPEN}\n"


# ---------------------------------------------------------------------------------------
# Rewards
def mean_logprob(lps: Sequence[float] | None) -> float:
    return float(sum(lps) / len(lps)) if lps else float("nan")


def relative_improvement(mean_lp_plan: float, mean_lp_noplan: float) -> float:
    """I = 100 · (1 − PPL_plan / PPL_noplan), with PPL = exp(−mean token log-prob). 0 means no help."""
    if not (math.isfinite(mean_lp_plan) and math.isfinite(mean_lp_noplan)):
        return float("nan")
    return 100.0 * (1.0 - math.exp(min(mean_lp_noplan - mean_lp_plan, 50.0)))


def vrcli_bucket(improvement: float, thresholds: Sequence[float] = VRCLI_THRESHOLDS,
                 levels: Sequence[float] = VRCLI_LEVELS) -> float:
    """The reward level of an improvement (percent): levels[k] for the k thresholds it reaches.
    Non-finite improvements (an unscorable pair) get the lowest level."""
    if len(levels) != len(thresholds) + 1 or list(thresholds) != sorted(thresholds):
        raise ConfigError(f"VR-CLI needs sorted thresholds and one more level than thresholds; got "
                          f"{list(thresholds)} and {list(levels)}.")
    if not math.isfinite(improvement):
        return float(levels[0])
    return float(levels[sum(improvement >= t for t in thresholds)])


def writing_reward(model, tokenizer, kind: str = "mean", *, scorer: str | None = None, max_plan_tokens: int = 64,
                   no_tag: str | float = "score", floor: float = -20.0, batch_size: int = 8,
                   thresholds: Sequence[float] = VRCLI_THRESHOLDS, levels: Sequence[float] = VRCLI_LEVELS,
                   max_length: int | None = None, name: str | None = None):
    """A TRL reward function over (prompt, completion, `answer` = reference continuation).

    kind="mean":  R = mean log P(reference token | prompt, plan); scorer "policy" by default.
    kind="vrcli": R = vrcli_bucket(I), I = relative perplexity improvement over the empty plan; scorer
                  "reference" (adapter off: the frozen model) by default, so no-plan scores are cached.
    Plans longer than `max_plan_tokens` are cut (flagged); an empty or missing plan is scored as the empty
    plan (its mean reward is the no-plan likelihood; its VR-CLI improvement is exactly 0). `no_tag`: a float
    gives completions without any tag that constant instead. Per-step stats (pass `.stats.flush` as
    `extra_metrics`): plan_tokens, plan_missing_frac, plan_truncated_frac, untagged_frac, mean_logprob,
    noplan_logprob, improvement_pct, reward.
    """
    if kind not in KINDS:
        raise ConfigError(f"Unknown writing reward {kind!r}. Choose one of {list(KINDS)}.")
    scorer = scorer or ("reference" if kind == "vrcli" else "policy")
    if scorer not in ("policy", "reference"):
        raise ConfigError(f"Unknown scorer {scorer!r}. Choose 'policy' or 'reference'.")
    if max_plan_tokens < 1:
        raise ConfigError(f"max_plan_tokens={max_plan_tokens} must be at least 1.")
    vrcli_bucket(0.0, thresholds, levels)  # validates thresholds/levels now, not mid-training
    stats = RewardStats(name or f"writing_{kind}")
    noplan_cache: dict[tuple[str, str], float] = {}  # only for the frozen scorer
    scope = scorer_scope(model, scorer)

    def reward(prompts=None, completions=(), answer=(), **kwargs) -> list[float]:
        texts, refs, pstr = reward_inputs(tokenizer, prompts, completions, answer)
        plans, status, truncated, n_tokens = [], [], [], []
        for t in texts:
            plan, st = extract_plan(t)
            plan, cut, n = limit_plan(plan, tokenizer, max_plan_tokens)
            plans.append(plan), status.append(st), truncated.append(cut), n_tokens.append(n)
        constant = no_tag != "score"
        to_score = [i for i, st in enumerate(status) if refs[i] and not (constant and st in ("untagged", "missing"))]
        # one no-plan sequence per distinct (prompt, reference): the comparison point
        keys = sorted({(pstr[i], refs[i]) for i in to_score} - (set(noplan_cache) if scorer == "reference" else set()))
        noplan_lps = score_or_none(model, tokenizer, [plan_context(p, "") for p, _ in keys], [r for _, r in keys],
                                 batch_size, max_length, True, scope, groups=[p for p, _ in keys])
        noplan = {k: mean_logprob(lp) for k, lp in zip(keys, noplan_lps)}
        if scorer == "reference":
            noplan_cache.update(noplan)
            noplan = noplan_cache
        plan_lps = score_or_none(model, tokenizer, [plan_context(pstr[i], plans[i]) for i in to_score],
                               [refs[i] for i in to_score], batch_size, max_length, True, scope,
                               groups=[pstr[i] for i in to_score])
        out = [float(no_tag) if constant else (floor if kind == "mean" else float(levels[0]))] * len(texts)
        means, improvements, base = [], [], []
        for i, lps in zip(to_score, plan_lps):
            m, b = mean_logprob(lps), noplan.get((pstr[i], refs[i]), float("nan"))
            imp = relative_improvement(m, b)
            out[i] = (m if math.isfinite(m) else floor) if kind == "mean" else vrcli_bucket(imp, thresholds, levels)
            if math.isfinite(m):
                means.append(m)
            if math.isfinite(b):
                base.append(b)
            if math.isfinite(imp):
                improvements.append(imp)
        n = max(1, len(texts))
        avg = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        stats.add(reward=avg(out), mean_logprob=avg(means), noplan_logprob=avg(base),
                  improvement_pct=avg(improvements), plan_tokens=avg(n_tokens),
                  plan_missing_frac=sum(p == "" for p in plans) / n, plan_truncated_frac=sum(truncated) / n,
                  untagged_frac=sum(st in ("untagged", "missing") for st in status) / n)
        return out

    reward.__name__ = name or f"writing_{kind}_reward"
    reward.stats = stats
    reward.kind, reward.scorer = kind, scorer
    return reward


# ---------------------------------------------------------------------------------------
# Evaluation
def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over `texts` (1.0 = no repetition; nan if no n-gram)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = re.findall(r"[\w']+", (t or "").lower())
        grams += [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def score_plans(model, tokenizer, prompts: Sequence[str], plans: Sequence[str], refs: Sequence[str], *,
                frozen: bool = False, batch_size: int = 8) -> list[float]:
    """Mean token log-prob of each reference given prompt + plan ("" = no plan); `frozen`: adapter off."""
    scope = scorer_scope(model, "reference" if frozen else "policy")
    lps = score_or_none(model, tokenizer, [plan_context(p, a) for p, a in zip(prompts, plans)], list(refs),
                      batch_size, None, True, scope, groups=list(prompts))
    return [mean_logprob(lp) for lp in lps]


def _ppl(mean_lp: float) -> float:
    return math.exp(-mean_lp) if math.isfinite(mean_lp) else float("nan")


def evaluate(model, tokenizer, rows: Sequence[dict], cfg: RunConfig, *, backend: str = "hf", label: str = "",
             lora_path=None):
    """(summary, per-story DataFrame): greedy plan + story for each held-out opening, then the reference's
    perplexity given the model's own plan, no plan, and the author's plan (when the data has one), scored
    by the current model and by the frozen one (adapter off), plus plan length, story length and distinct-n."""
    import pandas as pd

    from .evaluation import generate

    chat = [prompt_text(tokenizer, make_prompt(r["opening"])) for r in rows]
    texts = [c[0] for c in generate(model, tokenizer, chat, max_new_tokens=cfg.eval_max_new_tokens,
                                     batch_size=cfg.eval_batch_size, backend=backend, lora_path=lora_path,
                                     desc=f"writing {label}")]
    refs = [r["continuation"] for r in rows]
    records = []
    for r, t in zip(rows, texts):
        plan, status = extract_plan(t)
        plan, cut, n = limit_plan(plan, tokenizer, cfg.max_plan_tokens)
        story = extract_continuation(t)
        records.append({"id": r["id"], "opening": r["opening"], "reference": r["continuation"],
                        "author_plan": r.get("plan", ""), "completion": t, "plan": plan, "plan_status": status,
                        "plan_tokens": n, "plan_truncated": cut, "story": story,
                        "story_words": len(re.findall(r"[\w']+", story)),
                        "distinct_1": distinct_n([story], 1), "distinct_2": distinct_n([story], 2)})
    df = pd.DataFrame.from_records(records)
    plans = list(df["plan"])
    columns = {"lp_plan": (plans, False), "lp_noplan": ([""] * len(rows), False),
               "lp_plan_frozen": (plans, True), "lp_noplan_frozen": ([""] * len(rows), True)}
    if any(r.get("plan") for r in rows):
        columns["lp_author_plan"] = ([r.get("plan", "") for r in rows], False)
    for col, (ps, frozen) in columns.items():
        df[col] = score_plans(model, tokenizer, chat, ps, refs, frozen=frozen, batch_size=cfg.eval_batch_size)
    df["improvement_pct"] = [relative_improvement(a, b) for a, b in zip(df["lp_plan"], df["lp_noplan"])]
    df["improvement_pct_frozen"] = [relative_improvement(a, b)
                                    for a, b in zip(df["lp_plan_frozen"], df["lp_noplan_frozen"])]
    return summarize(df, label), df


def summarize(df, label: str = "") -> dict:
    """One row of the writing table from a per-story DataFrame."""
    import numpy as np

    def med_ppl(col):
        return float(np.nanmedian([_ppl(x) for x in df[col]])) if col in df and len(df) else float("nan")

    ok = df["plan_status"] == "ok"
    return {
        "model": label, "n": int(len(df)),
        "ppl_own_plan": med_ppl("lp_plan"), "ppl_no_plan": med_ppl("lp_noplan"),
        "ppl_author_plan": med_ppl("lp_author_plan"),
        "improvement_pct": float(np.nanmean(df["improvement_pct"])) if len(df) else float("nan"),
        "plan_helps_frac": float((df["improvement_pct"] > 0).mean()) if len(df) else float("nan"),
        "ppl_own_plan_frozen": med_ppl("lp_plan_frozen"),
        "improvement_pct_frozen": float(np.nanmean(df["improvement_pct_frozen"])) if len(df) else float("nan"),
        "plan_format_rate": float(ok.mean()) if len(df) else float("nan"),
        "plan_tokens": float(df["plan_tokens"].mean()) if len(df) else float("nan"),
        "story_words": float(df["story_words"].mean()) if len(df) else float("nan"),
        "distinct_1": distinct_n(list(df["story"]), 1), "distinct_2": distinct_n(list(df["story"]), 2),
    }


def before_after_pairs(before, after):
    """One row per held-out story with both models' plans and stories side by side (the browser's input)."""
    keep = ["id", "opening", "reference", "author_plan"]
    b = before[keep + ["plan", "story", "lp_plan", "improvement_pct"]]
    a = after[["id", "plan", "story", "lp_plan", "improvement_pct"]]
    out = b.merge(a, on="id", suffixes=("_before", "_after"))
    for s in ("before", "after"):
        out[f"ppl_{s}"] = [round(_ppl(x), 3) for x in out[f"lp_plan_{s}"]]
    return out


# ---------------------------------------------------------------------------------------
# Optional pairwise judge (a larger model; A100 preset; off by default)
JUDGE_PROMPT = (
    "You are judging two continuations of the same story opening for a children's story.\n"
    "Judge coherence with the opening, clarity, and whether the story is interesting and ends well.\n"
    "Do not prefer a continuation because it is longer.\n\n"
    "OPENING:\n{opening}\n\nCONTINUATION A:\n{a}\n\nCONTINUATION B:\n{b}\n\n"
    "Which continuation is better? Reply with a single letter: A or B."
)


def load_judge(model_name: str, load_in_4bit: bool = True, backend: str = "hf"):
    """(model, tokenizer) of a judge, loaded through the session's backend.

    unsloth: once Unsloth has patched the Qwen2/Llama classes, a model loaded with plain transformers breaks
    (the patched attention needs `self.apply_qkv`, which only models Unsloth loads itself get; unsloth
    2025.6.12, models/llama.py), so the judge is loaded by `FastLanguageModel.from_pretrained` too, with
    `fast_inference=False` (no second vLLM engine: the policy holds one) and put in inference mode.
    hf: plain transformers (+ bitsandbytes 4 bit on a GPU). Scoring goes through helpers.logprob, which
    uses the top-level forward on an Unsloth model."""
    import torch

    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(model_name=model_name, load_in_4bit=load_in_4bit,
                                                       fast_inference=False, dtype=None)
        FastLanguageModel.for_inference(model)
        return model, tok
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16) if load_in_4bit else None
    model = AutoModelForCausalLM.from_pretrained(model_name, quantization_config=quant, device_map="auto",
                                                 torch_dtype=torch.bfloat16)
    return model.eval(), AutoTokenizer.from_pretrained(model_name)


def judge_preferences(judge_model, judge_tokenizer, openings: Sequence[str], first: Sequence[str],
                      second: Sequence[str], batch_size: int = 4) -> "pd.DataFrame":
    """Pairwise preference of `first` over `second`, each pair asked twice with the order swapped.

    The judge's choice is read from its next-token log-probabilities of "A" vs "B" (no free text to parse).
    A pair counts as a win/loss only if both orders agree; otherwise a tie (position bias).
    """
    import pandas as pd

    ctx, tgt = [], []
    for o, x, y in zip(openings, first, second):
        for a, b in ((x, y), (y, x)):
            chat = [{"role": "user", "content": JUDGE_PROMPT.format(opening=o, a=a, b=b)}]
            p = judge_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            ctx += [p, p]
            tgt += ["A", "B"]
    lps = score_or_none(judge_model, judge_tokenizer, ctx, tgt, batch_size, None, True, nullcontext, groups=ctx)
    score = [sum(lp) if lp else float("nan") for lp in lps]
    rows = []
    for k in range(len(openings)):
        a1, b1, a2, b2 = score[4 * k:4 * k + 4]
        first_wins_1 = a1 > b1  # order 1: first shown as A
        first_wins_2 = b2 > a2  # order 2: first shown as B
        verdict = "win" if first_wins_1 and first_wins_2 else "loss" if not (first_wins_1 or first_wins_2) else "tie"
        rows.append({"pair": k, "first_preferred_as_A": first_wins_1, "first_preferred_as_B": first_wins_2,
                     "verdict": verdict})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
def cold_start_rows(rows: Sequence[dict], tokenizer, cfg: RunConfig) -> list[dict]:
    """Stories that have an author's plan, as cold-start targets: the plan, then the story trimmed so the
    whole completion fits in 3/4 of max_completion_length (GRPO's generations then end with </answer>)."""
    out = []
    budget = int(cfg.max_completion_length * 0.75)
    for r in rows:
        if not r.get("plan"):
            continue
        overhead = len(tokenizer(format_example(r["plan"], ""), add_special_tokens=False)["input_ids"])
        story = trim_to_tokens(r["continuation"], tokenizer, max(8, budget - overhead))
        out.append({**r, "completion": format_example(r["plan"], story)})
    return out


def writing_curves(metrics_csv, kind: str, label: str, save_to=(), smooth: int = 3):
    """Training curves of a writing run: total reward, the reference's mean log-prob with the plan and
    with no plan (each step is a different story: that is most of the reward's movement), the
    improvement over no plan, plan length and missing plans (collapse), format, length, KL."""
    stat = f"writing_{kind}"
    return plots.training_curves({"GRPO": metrics_csv}, label, smooth=smooth, save_to=save_to, columns=[
        "reward", f"{stat}/mean_logprob", f"{stat}/noplan_logprob", f"{stat}/improvement_pct",
        f"{stat}/plan_tokens", f"{stat}/plan_missing_frac", "rewards/strict_format_reward/mean",
        "completions/mean_length", "kl"])


class WritingExperiment(pipeline.Experiment):
    """pipeline.Experiment for the writing task: stories instead of GSM8K, its own evaluation and plots."""

    pre_training_labels = ("before", "after_sft")
    sft_kwargs = {"completion_fn": lambda r: r["completion"], "dataset_fn": sft_dataset}

    def load_rows(self):
        """(GRPO stories, held-out stories); runs after the tokenizer loads (continuations trimmed in tokens)."""
        train, held = load_for_run(self.cfg, self.tokenizer)
        self.sft_pool, grpo = sft_grpo_split(train, self.cfg.sft_steps > 0)
        print(f"[data] {len(grpo)} stories for GRPO, {len(self.sft_pool)} for the cold start, "
              f"{len(held)} held out ({train[0]['source'] if train else '-'})")
        return grpo, held

    def train_dataset(self):
        return grpo_dataset(self.train_rows)

    def sft_rows(self):
        return cold_start_rows(self.sft_pool, self.tokenizer, self.cfg)

    def cold_start(self, sft_dir=None) -> dict:
        if self.cfg.sft_steps and not self.sft_pool:
            print("[sft] no stories with an author's plan (hub data): the cold start has nothing to learn from.")
            self.sft = {"sft": "skipped: no plans in the data"}
            return self.sft
        return super().cold_start(sft_dir)

    def run_eval(self, rows, label: str, lora_path):
        return evaluate(self.model, self.tokenizer, rows, self.cfg, backend=self.backend, label=label,
                        lora_path=lora_path)

    @staticmethod
    def read_samples(path):
        import pandas as pd

        df = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN", ""])  # scores may be NaN
        for col in ("plan", "story", "author_plan", "completion"):  # texts may be empty, never NaN
            if col in df:
                df[col] = df[col].fillna("").astype(str)
        return df

    @staticmethod
    def summarize(df, label: str) -> dict:
        return summarize(df, label)

    def plot_curves(self, metrics_csv, save_to):
        kind = next((f.split("_")[1] for f in self.cfg.reward_weights if f.startswith("writing_")), "mean")
        writing_curves(metrics_csv, kind, self.label, save_to=save_to)

    def plot_bars(self, table, save_to):
        plots.writing_bars(table, self.label, save_to=save_to)


def sft_grpo_split(train: Sequence[dict], cold_start: bool) -> tuple[list[dict], list[dict]]:
    """(cold-start stories, GRPO stories): with a cold start on author plans, alternate stories go to each
    side, so GRPO never sees a prompt whose author plan the model was fine-tuned on."""
    if not cold_start or not any(r.get("plan") for r in train):
        return [], list(train)
    return list(train[0::2]), list(train[1::2])


def run_writing_stage(cfg: RunConfig, kind: str = "mean", **kw):
    """Notebook 04 end to end: held-out eval, cold start, GRPO with the writing reward, eval, report."""
    from .rewards import soft_format_reward, strict_format_reward

    exp = WritingExperiment(cfg, **kw)
    exp.evaluate("before")
    exp.cold_start()
    if cfg.sft_steps:
        exp.evaluate("after_sft")
    wr = writing_reward(exp.model, exp.tokenizer, kind, max_plan_tokens=cfg.max_plan_tokens)
    exp.train([strict_format_reward, soft_format_reward, wr], extra_metrics=wr.stats.flush)
    exp.evaluate("after")
    exp.report("04")
    return exp
