"""The logprob reward: R = log P(gold answer | prompt, own reasoning), token-exact and fast.

`score_targets` returns per-token log-probabilities of each target given its context:
- context+target are tokenized *jointly*; target tokens are those whose character span overlaps
  the target's characters (a token straddling the boundary counts as target). Tokenizing the two
  parts separately gives different tokens at the boundary for BPE vocabularies, and a wrong reward.
- the transformer body runs once per sequence, and the LM head only at the positions that predict
  target tokens: no full-vocabulary log-softmax over the whole sequence.
- sequences are sorted by length and batched with right padding, so padding wastes little;
- `share_prefix=True` (the default in the reward) computes the key/value cache of the longest
  common token prefix of a group once (the G completions of one prompt share it) and runs only the
  continuations: cheaper than one forward per sequence.
- we never trust `model(...).logits` to be logits: Unsloth's UNSLOTH_RETURN_HIDDEN_STATES makes it hold
  hidden states, and `to_logits` applies the LM head when the last dimension is not the vocabulary.

On a model Unsloth has patched (`is_unsloth_model`), the decoder body must not be called directly:
unsloth 2025.6.12 replaces it with `LlamaModel_fast_forward` (unsloth/models/llama.py), which reads
`past_key_values[0][0]` whenever a cache is passed (an empty DynamicCache raises KeyError), whose RoPE
ignores `position_ids`, and which gets its causal mask only from the top-level `CausalLM_fast_forward`
(called alone it attends both ways). There the scorer calls the top-level model with
UNSLOTH_RETURN_HIDDEN_STATES=1 and use_cache=False, never shares a prefix cache, and caps sequences at the
model's `max_seq_length` (beyond it Unsloth truncates silently). tests/test_gpu_path.py emulates that
forward on CPU; tests/test_colab_contract.py pins these lines in the wheel's source.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Callable, Sequence

from .data import ANSWER_CLOSE, ANSWER_OPEN, completion_text, split_reasoning
from .tokens import encode_pair  # joint tokenization of context+target; re-exported: logprob.encode_pair

DEFAULT_FLOOR = -20.0


# ---------------------------------------------------------------------------------------
# Model plumbing
def causal_lm(model):
    """The *ForCausalLM module under a PeftModel (LoRA layers are injected in place, so they still apply)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def body_and_head(model):
    lm = causal_lm(model)
    body = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    return body, lm.get_output_embeddings()


def to_logits(x, head, vocab_size: int):
    """Logits from `x`, which may already be logits or (Unsloth trap) hidden states."""
    return x if x.shape[-1] == vocab_size else head(x)


def is_unsloth_model(model) -> bool:
    """True when Unsloth has patched this model's classes (their forward functions live in `unsloth.*`)."""
    lm = causal_lm(model)
    for obj in (lm, getattr(lm, "model", None)):
        forward = getattr(type(obj), "forward", None) if obj is not None else None
        if str(getattr(forward, "__module__", "") or "").startswith("unsloth"):
            return True
    return False


def max_scoring_length(model) -> int | None:
    """The longest sequence the scorer may feed the model: Unsloth's `max_seq_length` (it silently truncates
    longer inputs), else the model's context window."""
    lm = causal_lm(model)
    limits = [getattr(lm, "max_seq_length", None), getattr(getattr(lm, "model", None), "max_seq_length", None),
              getattr(getattr(lm, "config", None), "max_position_embeddings", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


@contextmanager
def scoped_env(name: str, value: str):
    """Set an environment variable for the duration of a `with` block (e.g. UNSLOTH_RETURN_LOGITS=1)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def hidden_states(model, input_ids, attention_mask, past_key_values=None, position_ids=None):
    """(last hidden states, KV cache or None). On an Unsloth model: through the top-level forward (the only
    one that supplies the causal mask), hidden states requested with UNSLOTH_RETURN_HIDDEN_STATES=1, no cache.
    What comes back there may still be logits (if Unsloth ignored the variable): callers use `to_logits`."""
    if is_unsloth_model(model):
        if past_key_values is not None:
            raise RuntimeError("A KV cache cannot be passed to an Unsloth-patched model (it reads "
                               "past_key_values[0][0] and ignores position_ids): score without share_prefix.")
        with scoped_env("UNSLOTH_RETURN_HIDDEN_STATES", "1"):
            out = causal_lm(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits, None
    body, head = body_and_head(model)
    if body is not None:
        out = body(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                   position_ids=position_ids, use_cache=past_key_values is not None)
        return out.last_hidden_state, out.past_key_values
    # Fallback for models without get_decoder(): hidden states from the full model.
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                past_key_values=past_key_values, position_ids=position_ids, use_cache=past_key_values is not None)
    return out.hidden_states[-1], getattr(out, "past_key_values", None)


def target_logprobs(hidden, head, target_ids, vocab_size):
    """log P(target_ids[i] | …) from the hidden states that predict them, [N, H] -> [N], in float32."""
    import torch

    logits = to_logits(hidden, head, vocab_size).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


@contextmanager
def eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        if was:
            model.train()


# ---------------------------------------------------------------------------------------
# Scoring
def score_targets(model, tokenizer, contexts: Sequence[str], targets: Sequence[str], batch_size: int = 8,
                  max_length: int | None = None, share_prefix: bool = False, progress: bool = False,
                  groups: Sequence | None = None) -> list[list[float]]:
    """Per-token log P(target_i | context_i) for each pair. No gradient; the model's mode is restored.

    With `share_prefix`, pairs with the same `groups` key (e.g. the prompt) share one KV cache of their
    longest common token prefix; without keys, pairs are grouped by their first 64 tokens.
    """
    if len(contexts) != len(targets):
        raise ValueError(f"{len(contexts)} contexts but {len(targets)} targets")
    limit = max_scoring_length(model)
    max_length = limit if max_length is None else min(max_length, limit or max_length)
    encoded = [encode_pair(tokenizer, c, t, max_length) for c, t in zip(contexts, targets)]
    return score_encoded(model, encoded, batch_size=batch_size, share_prefix=share_prefix, progress=progress,
                         pad_id=tokenizer.pad_token_id or 0, groups=groups)


def score_encoded(model, encoded: Sequence[tuple[list[int], int]], *, batch_size: int = 8,
                  share_prefix: bool = False, progress: bool = False, pad_id: int = 0,
                  groups: Sequence | None = None) -> list[list[float]]:
    """Like `score_targets`, on already-encoded (ids, first_target_index) pairs."""
    import torch

    results: list[list[float] | None] = [None] * len(encoded)
    if not encoded:
        return []
    share_prefix = share_prefix and not is_unsloth_model(model)  # no KV cache through Unsloth's forward
    with torch.no_grad(), eval_mode(model):
        if share_prefix:
            keys = groups if groups is not None else [tuple(ids[:64]) for ids, _ in encoded]
            by_key: dict = defaultdict(list)
            for i, k in enumerate(keys):
                by_key[k].append(i)
            for idx in by_key.values():
                for i, lp in zip(idx, _score_shared_prefix(model, [encoded[i] for i in idx], batch_size, pad_id)):
                    results[i] = lp
        else:
            results = _score_bucketed(model, encoded, batch_size, pad_id, progress=progress)
    return results  # type: ignore[return-value]


def _score_bucketed(model, items, batch_size, pad_id, *, past_for=None, prefix_len: int = 0, progress=False):
    """Score `items` in length-sorted batches (little padding); results in the input order.

    `past_for(n)` gives a KV cache of the shared prefix for a batch of n (prefix sharing)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", leave=False)
    res: list = [None] * len(items)
    for b in batches:
        past = past_for(len(b)) if past_for is not None else None
        for i, lp in zip(b, _score_batch(model, [items[i] for i in b], pad_id, past=past, prefix_len=prefix_len)):
            res[i] = lp
    return res


def _score_batch(model, items, pad_id, past=None, prefix_len: int = 0):
    """One right-padded forward over `items`; the LM head runs only where a target token is predicted."""
    import torch

    body, head = body_and_head(model)
    vocab = head.weight.shape[0]
    device = head.weight.device
    seqs = [ids[prefix_len:] for ids, _ in items]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for row, s in enumerate(seqs):
        input_ids[row, :len(s)] = torch.tensor(s)
        mask[row, prefix_len:prefix_len + len(s)] = 1
    position_ids = None
    if past is not None:
        position_ids = (torch.arange(width) + prefix_len).unsqueeze(0).expand(len(seqs), -1).to(device)
    hidden, _ = hidden_states(model, input_ids.to(device), mask.to(device), past_key_values=past,
                               position_ids=position_ids)
    rows, cols, tgt, sizes = [], [], [], []
    for row, (ids, first) in enumerate(items):
        # token j (absolute) is predicted by the hidden state at absolute position j-1
        positions = range(first - 1, len(ids) - 1)
        rows += [row] * len(positions)
        cols += [p - prefix_len for p in positions]
        tgt += ids[first:]
        sizes.append(len(positions))
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    lps = target_logprobs(picked, head, torch.tensor(tgt, device=device), vocab).tolist()
    out, k = [], 0
    for n in sizes:
        out.append(lps[k:k + n])
        k += n
    return out


def _score_shared_prefix(model, items, batch_size, pad_id):
    """Score a group whose sequences share a token prefix: the prefix's KV cache is computed once."""
    import torch

    # Longest common prefix, but leave at least the token before each target un-cached (it is needed).
    lcp = min(min(len(ids) for ids, _ in items), min(first for _, first in items) - 1)
    first_ids = items[0][0]
    for ids, _ in items[1:]:
        n = 0
        while n < lcp and ids[n] == first_ids[n]:
            n += 1
        lcp = n
    if lcp < 8 or len(items) == 1:  # nothing worth sharing
        return _score_bucketed(model, items, batch_size, pad_id)
    device = body_and_head(model)[1].weight.device
    prefix = torch.tensor([first_ids[:lcp]], device=device)
    _, cache = hidden_states(model, prefix, torch.ones_like(prefix), past_key_values=new_cache())
    return _score_bucketed(model, items, batch_size, pad_id, past_for=lambda n: _repeat_cache(cache, n),
                           prefix_len=lcp)


def new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def _repeat_cache(cache, n: int):
    """A fresh DynamicCache holding `cache`'s keys/values repeated n times along the batch."""
    from transformers import DynamicCache

    legacy = cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache
    return DynamicCache.from_legacy_cache(tuple((k.expand(n, -1, -1, -1).contiguous(),
                                                 v.expand(n, -1, -1, -1).contiguous()) for k, v in legacy))


# ---------------------------------------------------------------------------------------
# Transforms: token log-probs l_1..l_n of the gold answer -> a scalar reward.
def _sum(lps, base=None, floor=DEFAULT_FLOOR):
    return float(sum(lps))


def _mean(lps, base=None, floor=DEFAULT_FLOOR):
    return float(sum(lps) / len(lps)) if lps else 0.0


def _prob(lps, base=None, floor=DEFAULT_FLOOR):
    return math.exp(sum(lps))


def _gmean_prob(lps, base=None, floor=DEFAULT_FLOOR):
    return math.exp(_mean(lps))


def _token_prob_mean(lps, base=None, floor=DEFAULT_FLOOR):
    return float(sum(math.exp(x) for x in lps) / len(lps)) if lps else 0.0


def _debiased(lps, base=None, floor=DEFAULT_FLOOR):
    """log P(a | p, r) - log P(a | p, no reasoning): how much the reasoning helped."""
    return _sum(lps) - (_sum(base) if base is not None else 0.0)


def _clip(lps, base=None, floor=DEFAULT_FLOOR):
    """Sum log-prob clipped from below at `floor`: hopeless traces all get the same reward."""
    return max(_sum(lps), floor)


TRANSFORMS: dict[str, Callable] = {
    "sum": _sum,
    "mean": _mean,
    "prob": _prob,
    "gmean_prob": _gmean_prob,
    "token_prob_mean": _token_prob_mean,
    "debiased": _debiased,
    "clip": _clip,
}


# Transforms whose values are probabilities, in [0, 1]: an unscorable completion gets 0 there (the least
# likely answer), not the log-space floor -20, which would sit far outside every other reward in the group
# and, after std scaling, swamp the advantages of the scorable ones.
BOUNDED_TRANSFORMS = ("prob", "gmean_prob", "token_prob_mean")


def floor_for(transform: str, floor: float | None = None) -> float:
    """The reward of an unscorable completion (and the clip level) under `transform`: `floor` if given
    (checked to lie in [0, 1] for the probability transforms), else 0.0 for those and DEFAULT_FLOOR (-20)
    for the log-space ones."""
    if floor is None:
        return 0.0 if transform in BOUNDED_TRANSFORMS else DEFAULT_FLOOR
    if transform in BOUNDED_TRANSFORMS and not 0.0 <= floor <= 1.0:
        from .config import ConfigError

        raise ConfigError(f"floor={floor} is outside the range [0, 1] of the {transform!r} transform (a probability). "
                          "Leave floor unset (0.0) or pick a value in [0, 1].")
    return float(floor)


def apply_transform(name: str, lps: Sequence[float], base: Sequence[float] | None = None,
                    floor: float | None = None) -> float:
    if name not in TRANSFORMS:
        from .config import ConfigError

        raise ConfigError(f"Unknown transform {name!r}. Choose one of {list(TRANSFORMS)}.")
    floor = floor_for(name, floor)
    value = TRANSFORMS[name](list(lps), base, floor)
    return value if math.isfinite(value) else floor


# ---------------------------------------------------------------------------------------
# The TRL reward function
def prompt_text(tokenizer, prompt) -> str:
    """The chat-templated prompt exactly as TRL renders it for generation."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def gold_context_target(prompt_str: str, completion: str, gold: str, *, answer_open: str = ANSWER_OPEN + "\n",
                        target_template: str = "{gold}\n" + ANSWER_CLOSE) -> tuple[str, str, bool]:
    """(context, target, had_answer_tag): the model's own answer is dropped and replaced by the gold one."""
    reasoning, tagged = split_reasoning(completion)
    return prompt_str + reasoning + answer_open, target_template.format(gold=gold), tagged


def scorer_scope(model, scorer: str) -> Callable:
    """A context-manager factory: "reference" disables the LoRA adapter (the frozen model scores),
    "policy" leaves the model as it is."""
    if scorer == "reference" and hasattr(model, "disable_adapter"):
        return model.disable_adapter
    return nullcontext


def reward_inputs(tokenizer, prompts, completions, answer) -> tuple[list[str], list[str], list[str]]:
    """(completion texts, answers as strings padded to one per completion, chat-templated prompt strings)
    from a TRL reward call; missing prompts or answers become empty strings, never an exception."""
    texts = [completion_text(c) for c in completions]
    answers = ([str(a) for a in (answer or [])] + [""] * len(texts))[: len(texts)]
    prompts_ = list(prompts) if prompts is not None else [""] * len(texts)
    return texts, answers, [prompt_text(tokenizer, p) for p in prompts_]


class RewardStats:
    """Accumulates what the logprob reward computed between two logging steps."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, **kv: float) -> None:
        for k, v in kv.items():
            self.values[k].append(float(v))

    def flush(self) -> dict[str, float]:
        out = {f"{self.prefix}/{k}": sum(v) / len(v) for k, v in self.values.items() if v}
        self.values.clear()
        return out


# What the reward scores, of the target "{gold}\n</answer>" (scored jointly with its context, as the model would
# emit it): "answer" = the gold answer's tokens plus the newline that ends it ("72\n": the newline separates 72
# from 720), "target" = the whole target, closing tag included. With short answers most of the whole target is
# the tag (4 of 6 tokens for "72"), which the model learns to predict near-perfectly, and a reward averaged over
# it can rise with no change in the answer's probability (the 2026-12-05 cpu run of notebook 02 did exactly that).
SPANS = ("answer", "target")


def span_token_count(tokenizer, context: str, target: str, gold: str, span: str) -> int | None:
    """How many leading target tokens `span` scores: None (all of them) for "target", else the tokens that
    overlap the gold answer and the one character after it."""
    if span == "target":
        return None
    return answer_token_count(tokenizer, context, target, len(gold) + 1)


def logprob_reward(model, tokenizer, transform: str = "sum", scorer: str = "policy", *,
                   floor: float | None = None, no_tag: str | float = "score", batch_size: int = 8,
                   share_prefix: bool = True, max_length: int | None = None,
                   target_template: str = "{gold}\n" + ANSWER_CLOSE, span: str = "answer",
                   name: str | None = None):
    """A TRL reward function: transform(log P(gold | prompt, own reasoning)), reading the `answer` column.

    scorer:  "policy" (the model being trained, adapter on) or "reference" (adapter disabled: the frozen base).
    span:    "answer" (default): the gold answer's tokens and the newline that ends it; "target": the whole
             target_template, closing tag included (see SPANS). Both are sliced from one joint tokenization of
             context + "{gold}\n</answer>", so they are exactly the tokens the model would emit.
    no_tag:  "score" (default): a completion without <answer> is scored after its whole text plus the tag;
             a float: such completions get that constant reward instead.
    The function's `.stats` (RewardStats) collects raw log-prob, transformed value and the tagless count;
    pass `.stats.flush` as `extra_metrics` to `train_grpo` to log them to metrics.csv each step.
    """
    if transform not in TRANSFORMS:
        from .config import ConfigError

        raise ConfigError(f"Unknown transform {transform!r}. Choose one of {list(TRANSFORMS)}.")
    if scorer not in ("policy", "reference"):
        from .config import ConfigError

        raise ConfigError(f"Unknown scorer {scorer!r}. Choose 'policy' or 'reference'.")
    if span not in SPANS:
        from .config import ConfigError

        raise ConfigError(f"Unknown span {span!r}. Choose one of {list(SPANS)}.")
    floor = floor_for(transform, floor)  # 0 for the probability transforms, -20 for the log-space ones
    stats = RewardStats(name or f"logprob_{transform}")
    scope = scorer_scope(model, scorer)

    def reward(prompts=None, completions=(), answer=(), **kwargs) -> list[float]:
        texts, golds, pstr = reward_inputs(tokenizer, prompts, completions, answer)
        triples = [gold_context_target(p, t, g, target_template=target_template) for p, t, g in zip(pstr, texts, golds)]
        to_score = [i for i, (_, _, tagged) in enumerate(triples) if tagged or no_tag == "score"]
        contexts = [triples[i][0] for i in to_score]
        targets = [triples[i][1] for i in to_score]
        base_of = {}
        if transform == "debiased":  # one extra sequence per distinct prompt: the gold with no reasoning
            uniq = sorted({pstr[i] for i in to_score})
            base_ctx = [p + ANSWER_OPEN + "\n" for p in uniq]
            base_gold = [golds[pstr.index(p)] for p in uniq]
            base_tgt = [target_template.format(gold=g) for g in base_gold]
            base_lps = score_or_none(model, tokenizer, base_ctx, base_tgt, batch_size, max_length, share_prefix, scope)
            base_of = {p: (None if lps is None else lps[:span_token_count(tokenizer, c, t, g, span)])
                       for p, c, t, g, lps in zip(uniq, base_ctx, base_tgt, base_gold, base_lps)}
        scored = score_or_none(model, tokenizer, contexts, targets, batch_size, max_length, share_prefix, scope,
                             groups=[pstr[i] for i in to_score])  # the G completions of a prompt share its cache
        out = [float(no_tag) if no_tag != "score" else floor] * len(texts)
        raw = []
        for i, lps in zip(to_score, scored):
            if lps is None:  # scoring failed for this one (e.g. target longer than the context window)
                out[i] = floor
                continue
            lps = lps[:span_token_count(tokenizer, triples[i][0], triples[i][1], golds[i], span)]
            out[i] = apply_transform(transform, lps, base_of.get(pstr[i]), floor)
            raw.append(sum(lps))
        n_tagless = sum(not tagged for _, _, tagged in triples)
        stats.add(raw_logprob=sum(raw) / len(raw) if raw else float("nan"),
                  reward=sum(out) / len(out) if out else 0.0,
                  tagless=n_tagless, tagless_frac=n_tagless / max(1, len(texts)))
        return out

    reward.__name__ = name or f"logprob_{transform}_reward"
    reward.stats = stats
    reward.transform, reward.scorer, reward.span = transform, scorer, span
    return reward


class ScorerError(RuntimeError):
    """The scorer itself failed (not a bad input): training must stop, not go on with floor rewards."""


def encode_scorable(tokenizer, contexts, targets, max_length: int | None):
    """encode_pair for each pair, or None for an unscorable *input* (an empty target, or a target that does
    not fit in max_length): those get the floor reward. Nothing else is caught here."""
    out = []
    for c, t in zip(contexts, targets):
        try:
            ids, first = encode_pair(tokenizer, c, t, max_length)
        except ValueError:
            out.append(None)
            continue
        out.append((ids, first) if first < len(ids) else None)
    return out


def score_or_none(model, tokenizer, contexts, targets, batch_size, max_length, share_prefix, scope, groups=None):
    """Per-token log-probs per pair; None for an unscorable input (floor reward). A failure of the scorer
    itself raises ScorerError at once, with what to do: a reward that silently became the floor for every
    completion would train on noise."""
    if not contexts:
        return []
    limit = max_scoring_length(model)
    max_length = limit if max_length is None else min(max_length, limit or max_length)
    encoded = encode_scorable(tokenizer, contexts, targets, max_length)
    ok = [i for i, e in enumerate(encoded) if e is not None]
    out: list = [None] * len(encoded)
    with scope():
        try:
            scored = score_encoded(model, [encoded[i] for i in ok], batch_size=batch_size, share_prefix=share_prefix,
                                   pad_id=tokenizer.pad_token_id or 0,
                                   groups=[groups[i] for i in ok] if groups is not None else None)
        except Exception as exc:  # noqa: BLE001 - re-raised with context, never swallowed
            raise ScorerError(
                f"The logprob scorer failed ({type(exc).__name__}: {exc}). This is a bug or an incompatible "
                "backend, not a bad completion. On a GPU, run the notebook with BACKEND='hf' (transformers + peft) "
                "and report the error.") from exc
    for i, lps in zip(ok, scored):
        out[i] = lps
    return out


def gold_logprobs(model, tokenizer, prompts, completions, golds, batch_size: int = 8) -> list[list[float]]:
    """Per-token log P(gold | prompt, reasoning of the completion) for each (prompt, completion, gold); a
    prompt is a chat message list or an already templated string. The diagnostics all score through this."""
    pairs = [gold_context_target(prompt_text(tokenizer, p), completion_text(c), g)
             for p, c, g in zip(prompts, completions, golds)]
    return score_targets(model, tokenizer, [c for c, _, _ in pairs], [t for _, t, _ in pairs],
                         batch_size=batch_size, share_prefix=True)


def gold_perplexity(model, tokenizer, prompts, completions, golds, batch_size: int = 8) -> list[float]:
    """exp(-mean log P(gold token | prompt, own reasoning)) per completion: lower is better."""
    return [math.exp(-_mean(x)) for x in gold_logprobs(model, tokenizer, prompts, completions, golds, batch_size)]


def answer_token_count(tokenizer, context: str, target: str, answer_chars: int) -> int:
    """How many of the target's tokens (joint tokenization, as `encode_pair`) overlap its first `answer_chars`
    characters: the gold answer's own tokens at the start of "{gold}\n</answer>", the rest being the tag."""
    enc = tokenizer(context + target, add_special_tokens=False, return_offsets_mapping=True)
    boundary, end = len(context), len(context) + answer_chars
    return sum(1 for s, e in enc["offset_mapping"] if e > boundary and e > s and s < end)


def gold_target_scores(model, tokenizer, prompts, completions, golds, batch_size: int = 8,
                       span: str = "answer") -> list[tuple[list[float], int, int]]:
    """Per completion, from one scoring pass: (per-token log P of the whole target "{gold}\n</answer>", how many of
    those tokens are the gold answer's own, how many the reward's `span` scores)."""
    pairs = [gold_context_target(prompt_text(tokenizer, p), completion_text(c), str(g))
             for p, c, g in zip(prompts, completions, golds)]
    lps = score_targets(model, tokenizer, [c for c, _, _ in pairs], [t for _, t, _ in pairs], batch_size=batch_size,
                        share_prefix=True)
    out = []
    for lp, (c, t, _), g in zip(lps, pairs, golds):
        n_answer = min(answer_token_count(tokenizer, c, t, len(str(g))), len(lp))
        n_span = span_token_count(tokenizer, c, t, str(g), span)
        out.append((lp, n_answer, len(lp) if n_span is None else min(n_span, len(lp))))
    return out


def reward_span_logprobs(model, tokenizer, prompts, completions, golds, batch_size: int = 8,
                         span: str = "answer") -> list[list[float]]:
    """Per completion: the per-token log-probs the logprob reward transforms (`span` as in `logprob_reward`), for
    diagnostics that must score exactly what training scores (AUROC, best-of-N, trace probes)."""
    return [lp[:k] for lp, _, k in gold_target_scores(model, tokenizer, prompts, completions, golds, batch_size, span)]


def gold_answer_split(model, tokenizer, prompts, completions, golds, batch_size: int = 8
                      ) -> list[tuple[list[float], int]]:
    """Per completion: (per-token log P of the whole target "{gold}\n</answer>", how many of those tokens are the
    gold answer's own). The evaluation tables report both; the reward (span "answer") scores the answer's tokens
    and the newline after them, because with short answers most target tokens are the tag."""
    return [(lp, k) for lp, k, _ in gold_target_scores(model, tokenizer, prompts, completions, golds, batch_size)]


def gold_metrics(model, tokenizer, prompts, completions, golds, batch_size: int = 8) -> dict[str, list[float]]:
    """Columns for the evaluation tables: gold log-prob (sum) and perplexity with the closing tag, and over the
    gold answer's own tokens alone (`gold_answer_*`)."""
    out: dict[str, list[float]] = {"gold_logprob": [], "gold_ppl": [], "gold_answer_logprob": [],
                                   "gold_answer_ppl": [], "gold_answer_tokens": []}
    for lp, k in gold_answer_split(model, tokenizer, prompts, completions, golds, batch_size):
        answer = lp[:k]
        out["gold_logprob"].append(float(sum(lp)))
        out["gold_ppl"].append(math.exp(-_mean(lp)) if lp else float("nan"))
        out["gold_answer_logprob"].append(float(sum(answer)))
        out["gold_answer_ppl"].append(math.exp(-_mean(answer)) if answer else float("nan"))
        out["gold_answer_tokens"].append(float(k))
    return out
