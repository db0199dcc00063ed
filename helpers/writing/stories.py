"""Story data: sentence splitting, opening/continuation split, held-out split by hash, bundled and hub
stories, prompts and the datasets GRPO and the cold start read."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..config import ConfigError, RunConfig
from ..data import ANSWER_CLOSE, ANSWER_OPEN, REASONING_CLOSE, REASONING_OPEN
from .settings import BUNDLED_STORIES, HUB_DATASET, USER_TEMPLATE, WRITING_SYSTEM_PROMPT

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
    from ..data import read_jsonl

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
    from ..data import resolve_source

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
