"""Joint tokenization of a context/target pair: the one token split that every scorer and trainer shares.

Lives apart from `helpers.logprob` (the scorer) and `helpers.data` (the SFT dataset) so both can use it and the
imports run one way: data -> tokens, logprob -> tokens, logprob -> data. `helpers.logprob.encode_pair` is this
function, re-exported. Imports nothing from helpers.
"""
from __future__ import annotations


def encode_pair(tokenizer, context: str, target: str, max_length: int | None = None) -> tuple[list[int], int]:
    """Token ids of context+target (tokenized jointly) and the index of the first target token.

    A token whose character span overlaps the target counts as target. When the sequence is longer
    than `max_length` the context is cut from the left, so the target always survives.
    """
    text = context + target
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    boundary = len(context)
    first = next((i for i, (s, e) in enumerate(offsets) if e > boundary and e > s), len(ids))
    if first == 0:  # nothing before the target: prepend a BOS-like token so the first target token has a context
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids, first = [bos] + list(ids), 1
    if max_length is not None and len(ids) > max_length:
        n_target = len(ids) - first
        if n_target >= max_length:
            raise ValueError(f"Target of {n_target} tokens does not fit in max_length={max_length}.")
        cut = len(ids) - max_length
        ids, first = ids[cut:], first - cut
    return list(ids), first
