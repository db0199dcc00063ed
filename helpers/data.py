"""GSM8K: loading (hub on Colab, bundled copy offline), the prompt format, and answer parsing.

Parsing functions take untrusted model text: they use bounded regular expressions only,
never raise on a string, and never evaluate anything.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig
from .tokens import encode_pair

BUNDLED_DIR = Path(__file__).parent / "data_files" / "gsm8k"
BUNDLED_FILES = {"test": "test.jsonl", "train": "train_subset.jsonl"}

# The reasoning block's tags, by RunConfig.tag_style. The answer block is <answer>…</answer> in every style,
# so answer extraction and the logprob reward's target (from "{gold}\n</answer>") do not depend on the style.
TAG_STYLES = {"reasoning": ("<reasoning>", "</reasoning>"),  # this curriculum's default (Will Brown's GRPO demo)
              "think": ("<think>", "</think>")}  # DeepSeek-R1 / grpo-reasoncheck style
REASONING_OPEN, REASONING_CLOSE = TAG_STYLES["reasoning"]
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def reasoning_tags(tag_style: str = "reasoning") -> tuple[str, str]:
    """(opening, closing) tag of the reasoning block in `tag_style`; ConfigError for an unknown style."""
    if tag_style not in TAG_STYLES:
        raise ConfigError(f"Unknown tag_style {tag_style!r}. Choose one of {sorted(TAG_STYLES)}.")
    return TAG_STYLES[tag_style]


def format_instructions(tag_style: str = "reasoning") -> str:
    """The system prompt that asks for the tag format of `tag_style`."""
    open_, close = reasoning_tags(tag_style)
    return f"Respond in the following format:\n{open_}\n...\n{close}\n{ANSWER_OPEN}\n...\n{ANSWER_CLOSE}"


SYSTEM_PROMPT = format_instructions("reasoning")



def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a plain string, or a conversational [{'role', 'content'}] list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    if isinstance(completion, dict):
        content = completion.get("content", "")
        return content if isinstance(content, str) else ""
    return ""


def extract_gold(gsm8k_answer: str) -> str:
    """The final answer of a GSM8K solution: the text after '####', commas removed ('1,000' -> '1000')."""
    if not isinstance(gsm8k_answer, str) or "####" not in gsm8k_answer:
        raise ValueError(f"Not a GSM8K solution (no '####' line): {str(gsm8k_answer)[:80]!r}")
    return gsm8k_answer.rsplit("####", 1)[1].strip().replace(",", "")


def extract_answer(completion_text: str) -> str | None:
    """Strict: the text inside the last <answer>…</answer> pair, stripped; None if there is no closed pair."""
    if not isinstance(completion_text, str):
        return None
    end = completion_text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = completion_text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return completion_text[start + len(ANSWER_OPEN):end].strip()


# ---------------------------------------------------------------------------------------
# Numbers in untrusted text. One scanner serves lenient accuracy (the last number) and the strict
# correctness reward (helpers.rewards), so both read "3-4", "2023-10", "10:30" and "1,8" the same way.
_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# Dates (2023-10, 2023-10-05, 10/05/2023) and clock times (10:30, 7:05:59) are not quantities.
_NOT_QUANTITY = re.compile(r"(?<![\d.])(?:\d{4}-\d{1,2}(?:-\d{1,2})?|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}(?::\d{2}){1,2})(?![\d.])")
_MINUS = "-\u2212"  # hyphen-minus and the unicode minus sign


@dataclass(frozen=True)
class Number:
    """A number found in text: its exact value, its text (sign included, commas removed), where it
    stands, and whether it was malformed (a comma that is not a thousands separator: "1,8", "10,00")."""
    value: Fraction
    text: str
    start: int
    end: int
    malformed: bool = False


def scan_numbers(text: str, limit: int = 5000) -> list[Number]:
    """Every number in the last `limit` characters of `text`, in order. Never raises, never evaluates.

    - a minus sign counts only where a number can start (after a space, "(", "=", ":", "$", or at the
      start): in "3-4", "2023-10" or "COVID-19" the hyphen joins words, it is not a sign;
    - thousands separators count only in groups of three ("1,000" = 1000); "1,8" is malformed;
    - dates and clock times are skipped (they are not quantities);
    - digits glued to a letter on their left ("m2", "x3") are part of a word, not a number.
    """
    if not isinstance(text, str):
        return []
    text = text[-limit:]
    masked = _NOT_QUANTITY.sub(lambda m: " " * len(m.group(0)), text)
    out: list[Number] = []
    for m in _DIGITS.finditer(masked):
        raw, start = m.group(0).rstrip(","), m.start()
        if not raw:
            continue
        before = masked[start - 1] if start > 0 else " "
        if before.isalpha() or before == "_":
            continue
        negative = False
        if before in _MINUS:
            prev = masked[start - 2] if start > 1 else " "
            negative = not (prev.isalnum() or prev in ".)]}")
        malformed = "," in raw and not _GROUPED.fullmatch(raw)
        # A malformed "3,4" is read as the numbers 3 and 4 (flagged), never as 34.
        parts = [(raw.replace(",", ""), start)] if not malformed else []
        if malformed:
            offset = start
            for part in raw.split(","):
                if part:
                    parts.append((part, offset))
                offset += len(part) + 1
        for i, (digits, at) in enumerate(parts):
            try:
                value = Fraction(digits)
            except (ValueError, ZeroDivisionError):
                continue
            neg = negative and i == 0
            out.append(Number(-value if neg else value, ("-" if neg else "") + digits, at - (1 if neg else 0),
                              at + len(digits), malformed))
    return out


def extract_last_number(text: str) -> str | None:
    """Lenient: the last number anywhere in the text ('1,000' -> '1000', 'page 3-4' -> '4'), or None."""
    numbers = scan_numbers(text)
    return numbers[-1].text.rstrip(".") if numbers else None


def split_reasoning(completion_text: str) -> tuple[str, bool]:
    """(text before the first <answer> tag, whether the tag was found). Without a tag: all the text, False."""
    if not isinstance(completion_text, str):
        return "", False
    i = completion_text.find(ANSWER_OPEN)
    if i < 0:
        return completion_text, False
    return completion_text[:i], True


def make_prompt(question: str, system_prompt: str | None = None, *, tag_style: str = "reasoning"
                ) -> list[dict[str, str]]:
    """Chat-format prompt: the format instructions as the system turn, the question as the user turn.
    The instructions are `system_prompt` when given, else those of `tag_style`."""
    system = system_prompt if system_prompt is not None else format_instructions(tag_style)
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def format_solution(gsm8k_answer: str, tag_style: str = "reasoning") -> str:
    """A GSM8K worked solution rewritten in the tag format of `tag_style` (used for the cold-start SFT)."""
    open_, close = reasoning_tags(tag_style)
    reasoning = gsm8k_answer.rsplit("####", 1)[0]
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()  # drop calculator annotations
    return f"{open_}\n{reasoning}\n{close}\n{ANSWER_OPEN}\n{extract_gold(gsm8k_answer)}\n{ANSWER_CLOSE}"


# ---------------------------------------------------------------------------------------
def read_jsonl(path: Path, what: str = "GSM8K file", parse=lambda row: row) -> list:
    """`parse(obj)` of each non-empty line of a bundled JSONL file. A missing file, a line that is not
    JSON, or a row `parse` rejects (KeyError/TypeError/AttributeError/ValueError) is a ConfigError
    naming the file and line: never a crash mid-run, never a silently skipped row."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"Bundled {what} {path} is missing. Re-clone the repository or reinstall the package "
            "(`pip install -e .`), or set dataset_source='hub' where the Hugging Face hub is reachable."
        )
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(parse(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno} is not valid JSON ({exc}). The file is corrupt.") from exc
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ConfigError(f"{path}:{lineno} is not a valid row ({exc!r}). The file is corrupt.") from exc
    return rows


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    return read_jsonl(path, "GSM8K file", lambda row: {"question": row["question"], "answer": row["answer"]})


def resolve_source(source: str) -> str:
    from .runtime import is_colab

    if source == "auto":
        return "hub" if is_colab() else "bundled"
    if source not in ("hub", "bundled"):
        raise ConfigError(f"Unknown dataset_source {source!r}. Choose 'auto', 'hub' or 'bundled'.")
    return source


def load_gsm8k_rows(split: str, source: str = "auto", n: int | None = None) -> list[dict[str, str]]:
    """GSM8K rows {'question', 'answer'} of `split` ('train' or 'test'), the first `n` if given."""
    if split not in BUNDLED_FILES:
        raise ConfigError(f"Unknown GSM8K split {split!r}. Choose 'train' or 'test'.")
    if resolve_source(source) == "hub":
        from datasets import load_dataset

        ds = load_dataset("openai/gsm8k", "main", split=split)
        rows = [{"question": r["question"], "answer": r["answer"]} for r in ds]
    else:
        rows = _read_jsonl(BUNDLED_DIR / BUNDLED_FILES[split])
    if n is not None:
        if n > len(rows):
            print(f"[data] asked for {n} {split} rows, only {len(rows)} available: using all of them.")
        rows = rows[:n]
    return rows


def grpo_dataset(rows: list[dict[str, str]], system_prompt: str | None = None, *, tag_style: str = "reasoning"):
    """A datasets.Dataset with TRL's `prompt` column (chat format) and the gold `answer` column."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": make_prompt(r["question"], system_prompt, tag_style=tag_style),
          "answer": extract_gold(r["answer"]),
          "question": r["question"]} for r in rows]
    )


def sft_dataset(rows: list[dict[str, str]], system_prompt: str | None = None, *, tag_style: str = "reasoning"):
    """Prompt/completion conversations whose completion is the gold solution in tag format (SFTTrainer).

    TRL masks the prompt tokens, so the loss is on the assistant turn only.
    """
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": make_prompt(r["question"], system_prompt, tag_style=tag_style),
          "completion": [{"role": "assistant", "content": format_solution(r["answer"], tag_style)}]} for r in rows]
    )


def load_for_run(cfg: RunConfig):
    """(train rows, eval rows) for a run: train from the train split, eval from the test split."""
    train = load_gsm8k_rows("train", cfg.dataset_source, cfg.train_size)
    test = load_gsm8k_rows("test", cfg.dataset_source, cfg.eval_size)
    return train, test


def tokenized_sft_dataset(dataset, tokenizer, max_length: int | None = None):
    """Prompt/completion conversations -> `input_ids`, `attention_mask`, `labels` (prompt tokens -100).

    For the Unsloth backend: unsloth_zoo 2025.6.8 replaces SFTTrainer's dataset preparation
    (`sft_prepare_dataset`, dataset_utils.py) and, for a dataset without a `text` column, raises
    "You must specify a `formatting_func`"; a dataset that already has `labels` is used as it is (with a
    seq2seq collator), which keeps the loss on the answer turn only, as TRL's completion_only_loss does on hf.
    The text is the chat template of prompt + completion; prompt and completion are tokenized jointly and
    split where the completion's characters begin (as the logprob scorer does)."""
    from datasets import Dataset

    rows = []
    for i, ex in enumerate(dataset):
        prompt = tokenizer.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(list(ex["prompt"]) + list(ex["completion"]), tokenize=False)
        if not full.startswith(prompt):
            raise ConfigError(f"SFT example {i}: the chat template of prompt + completion does not start with the "
                              "templated prompt, so the answer turn cannot be located.")
        ids, first = encode_pair(tokenizer, prompt, full[len(prompt):], max_length)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * first + ids[first:]})
    return Dataset.from_list(rows)
