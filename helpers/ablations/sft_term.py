"""The SFT term: λ·NLL(gold answer | prompt, own reasoning), with gradient, added to TRL's GRPO loss."""
from __future__ import annotations

from typing import Sequence


SFT_KEYS = ("sft_input_ids", "sft_attention_mask", "sft_target_mask")


def sft_batch(tokenizer, prompts: Sequence[str], completions: Sequence[str], golds: Sequence[str], *,
              max_length: int | None = None) -> dict:
    """Right-padded ids of prompt + own reasoning + "<answer>\\n" + gold + "\\n</answer>", and a target mask.

    The same context/target split as the logprob reward (gold_context_target), tokenized jointly
    (encode_pair), so the SFT term and the reward score exactly the same tokens.
    """
    import torch

    from ..logprob import encode_pair, gold_context_target

    encoded = [encode_pair(tokenizer, *gold_context_target(p, c, str(g))[:2], max_length)
               for p, c, g in zip(prompts, completions, golds)]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    target = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, first) in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        target[row, first:len(ids)] = 1
    return dict(zip(SFT_KEYS, (input_ids, attention, target)))


def answer_nll(model, input_ids, attention_mask, target_mask):
    """Mean NLL of the target tokens (token-weighted over the batch), with gradient.

    The LM head runs only where a target token is predicted (as in the scorer), and never through
    `model(...).logits`, which Unsloth may fill with hidden states."""
    from ..logprob import body_and_head, hidden_states, target_logprobs

    hidden, _ = hidden_states(model, input_ids, attention_mask)
    head = body_and_head(model)[1]
    predicts = target_mask[:, 1:].bool()  # token j is predicted by the hidden state at j-1
    lps = target_logprobs(hidden[:, :-1][predicts], head, input_ids[:, 1:][predicts], head.weight.shape[0])
    return -lps.mean()


def sft_term_trainer_class(sft_weight: float, base=None):
    """A GRPOTrainer subclass whose loss is the GRPO loss + sft_weight × NLL(gold | prompt, own reasoning).

    This is the supervised half of VeriFree / JEPO: the reward log P(gold | p, r) also has a gradient
    through the answer tokens, which TRL's reward-function path drops (rewards are plain floats). trl is
    imported here, not at module import (Unsloth must patch it first on GPU).
    """
    if base is None:
        from trl import GRPOTrainer as base

    class SFTTermGRPOTrainer(base):
        SFT_WEIGHT = float(sft_weight)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            from ..logprob import prompt_text

            tok = self.processing_class
            # Decoded exactly as TRL decodes them for the reward functions.
            completions = tok.batch_decode(out["completion_ids"], skip_special_tokens=True)
            prompt_max = getattr(self, "max_prompt_length", None)
            limit = prompt_max + getattr(self, "max_completion_length", 0) + 64 if prompt_max else None
            batch = sft_batch(tok, [prompt_text(tok, x["prompt"]) for x in inputs], completions,
                              [x["answer"] for x in inputs], max_length=limit)
            # Tensors with the batch as first dimension survive TRL's shuffle and split into micro-batches.
            out.update({k: t.to(out["completion_ids"].device) for k, t in batch.items()})
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rest = {k: v for k, v in inputs.items() if k not in SFT_KEYS}
            loss = super().compute_loss(model, rest, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
            if self.SFT_WEIGHT == 0 or not all(k in inputs for k in SFT_KEYS):
                return loss
            nll = answer_nll(self.accelerator.unwrap_model(model), *(inputs[k] for k in SFT_KEYS))
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["sft_term"].append(self.accelerator.gather(nll.detach()).mean().item())
            return loss + self.SFT_WEIGHT * nll

    return SFTTermGRPOTrainer
