"""Training dynamics: likelihood, perplexity and entropy of fixed (context, target) pools, recorded at the
start of training and after every checkpoint save. Used by the ablation grid (notebook 03)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

from . import training


DYNAMICS_KINDS = {"own": "gold answer after the model's own (start) reasoning",
                  "ref": "GSM8K reference solution in tag format"}


def dynamics_pool(tokenizer, samples, test_rows: Sequence[dict], n: int = 8, tag_style: str = "reasoning"
                  ) -> list[dict]:
    """A fixed pool of (kind, context, target): the gold answer after each of the first `n` saved eval
    completions (`samples`: question, gold, completion columns) and the first `n` reference solutions."""
    from .data import format_solution, make_prompt
    from .logprob import gold_context_target, prompt_text

    pool = []
    for q, g, c in list(zip(samples["question"], samples["gold"], samples["completion"]))[:n]:
        context, target, _ = gold_context_target(prompt_text(tokenizer, make_prompt(q, tag_style=tag_style)),
                                                 str(c), str(g))
        pool.append({"kind": "own", "context": context, "target": target})
    for r in list(test_rows)[:n]:
        pool.append({"kind": "ref", "context": prompt_text(tokenizer, make_prompt(r["question"], tag_style=tag_style)),
                     "target": format_solution(r["answer"], tag_style)})
    return pool


def target_token_stats(model, encoded: Sequence[tuple[list[int], int]], *, pad_id: int = 0, batch_size: int = 4,
                       chunk: int = 256) -> list[tuple[list[float], list[float]]]:
    """Per pair: (log-prob of each target token, entropy of the model's next-token distribution there).
    No gradient; the model's mode is restored. The LM head runs in chunks of `chunk` positions."""
    import torch

    from .logprob import body_and_head, eval_mode, hidden_states, to_logits

    head = body_and_head(model)[1]
    vocab, device = head.weight.shape[0], head.weight.device
    out: list = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    with torch.no_grad(), eval_mode(model):
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i][0])] = torch.tensor(encoded[i][0])
                mask[row, :len(encoded[i][0])] = 1
            hidden, _ = hidden_states(model, ids.to(device), mask.to(device))
            for row, i in enumerate(idx):
                seq, first = encoded[i]
                h = hidden[row, first - 1:len(seq) - 1]
                tgt = torch.tensor(seq[first:], device=device)
                lps, ents = [], []
                for c in range(0, len(tgt), chunk):
                    logp = torch.log_softmax(to_logits(h[c:c + chunk], head, vocab).float(), dim=-1)
                    lps += logp.gather(-1, tgt[c:c + chunk, None]).squeeze(-1).tolist()
                    ents += (-(logp.exp() * logp).sum(-1)).tolist()
                out[i] = (lps, ents)
    return out


def kind_stats(model, tokenizer, pool: Sequence[dict], *, batch_size: int = 4) -> dict[str, dict[str, float]]:
    """Per pool kind (in first-seen order): mean log-likelihood of a target (`loglik`, nats, summed over its
    tokens), token perplexity (`ppl`, exp of minus the mean over all the kind's tokens), mean token entropy
    (`entropy`) and mean target length in tokens (`tokens`)."""
    from .logprob import encode_pair

    encoded = [encode_pair(tokenizer, it["context"], it["target"]) for it in pool]
    stats = target_token_stats(model, encoded, pad_id=tokenizer.pad_token_id or 0, batch_size=batch_size)
    out: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(it["kind"] for it in pool):
        mine = [st for it, st in zip(pool, stats) if it["kind"] == kind]
        lps = [x for lp, _ in mine for x in lp]
        ents = [x for _, e in mine for x in e]
        out[kind] = {"loglik": sum(sum(lp) for lp, _ in mine) / len(mine), "ppl": math.exp(-sum(lps) / len(lps)),
                     "entropy": sum(ents) / len(ents), "tokens": len(lps) / len(mine)}
    return out


STAT_NAMES = ("loglik", "ppl", "entropy")


def dynamics_stats(model, tokenizer, pool: Sequence[dict], *, batch_size: int = 4,
                   names: Sequence[str] = STAT_NAMES) -> dict[str, float]:
    """Per pool kind: mean log-likelihood of a target (nats), token perplexity and mean token entropy
    (`kind_stats`, flattened to "kind/loglik", "kind/ppl", "kind/entropy"; `names` may add "tokens")."""
    return {f"{kind}/{name}": st[name] for kind, st in kind_stats(model, tokenizer, pool, batch_size=batch_size).items()
            for name in names}


def unflatten(row: dict) -> dict[str, dict[str, float]]:
    """A dynamics CSV row ({"kind/stat": value, "step": ..., "seconds": ...}) as {kind: {stat: value}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if "/" in key:
            kind, name = key.rsplit("/", 1)
            out.setdefault(kind, {})[name] = float(value)
    return out


def DynamicsCallback(path: str | Path, tokenizer, pool: Sequence[dict], batch_size: int = 4,  # noqa: N802
                     *, every: int | None = None, names: Sequence[str] = STAT_NAMES):
    """A TrainerCallback writing dynamics_stats of the pool to `path` (one row per step) at the start of
    training and after every checkpoint save, or, with `every`, every `every` optimizer steps and at the last
    step (trainers that save no checkpoints: notebook 05's SFT runs). Main process only; resumed runs drop rows
    past the checkpoint."""
    from transformers import TrainerCallback

    class _Dynamics(TrainerCallback):
        def __init__(self):
            self.csv: training.MetricsCSV | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return
            self.csv = training.MetricsCSV(path)
            self.csv.truncate_after(state.global_step)
            if state.global_step == 0:
                self._record(0, model)

        def on_save(self, args, state, control, model=None, **kwargs):
            if not every and state.is_world_process_zero and self.csv is not None:
                self._record(state.global_step, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if every and state.is_world_process_zero and self.csv is not None and (
                    step % every == 0 or step == state.max_steps):
                self._record(step, model)

        def _record(self, step: int, model) -> None:
            if model is None or any(hasattr(p, "ds_id") for p in model.parameters()):
                return  # ZeRO-3 shards the weights: one process alone cannot run the model
            t0 = time.time()
            row = {"step": step, **dynamics_stats(model, tokenizer, pool, batch_size=batch_size, names=names)}
            self.csv.append(row | {"seconds": round(time.time() - t0, 2)})

    return _Dynamics()
