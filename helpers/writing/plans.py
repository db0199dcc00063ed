"""Plan parsing: the plan and the story from a completion, the plan cut to a token budget, and the one
canonical context a plan is scored in."""
from __future__ import annotations

from ..data import ANSWER_CLOSE, ANSWER_OPEN, REASONING_CLOSE, REASONING_OPEN, completion_text

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
