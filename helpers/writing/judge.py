"""Optional pairwise judge (a larger model; A100 preset; off by default)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pandas as pd

from ..logprob import score_or_none

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
