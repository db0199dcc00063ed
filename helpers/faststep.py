"""A cheaper GRPO step on the hf backend (CPU, one process): the same step, less work per step.

TRL 0.18's step on the hf path does two things this module changes, and nothing else:

1. Generation: `unwrapped_model.generate(...)` goes through `helpers.fastgen` (a lean decode loop over the live
   weights, finished rows dropped). The generator reads the adapter's current tensors, so it cannot lag behind the
   policy; `generator_gap` measures that at every step (fast decoder vs the model's own forward on one prompt) and
   stops the run if they ever disagree.
2. The loss forward (`_get_per_token_logps`): the G completions of a group share one prompt, so the prompt is run
   once per group (with gradients: LoRA on k/v changes the prompt's keys and values) and its KV cache is expanded to
   the G completions, instead of running the same prompt G times. The log-probs are those of the same tokens under
   the same weights; two things differ from TRL's own path, both in favour of exactness: positions start at each
   prompt's first real token (as in generation; TRL's batch forward counts left padding as positions, a shift that
   RoPE cancels in exact arithmetic), and the log-softmax is taken in fp32 (TRL takes it in the logits' dtype, bf16
   on a bf16 base). tests/test_faststep.py checks log-probs and LoRA gradients against TRL's path in fp32.

`trainer_class(base)` returns a subclass of `base` (TRL's GRPOTrainer, or a subclass such as the SFT-term trainer)
with both changes; `applies(cfg, backend)` says when training.train_grpo uses it (RunConfig.fast_step).
"""
from __future__ import annotations

# mean KL(model || fast decoder), nats, on one prompt: measured ~1e-10 in fp32 and ~2e-3 in bf16 (SmolLM2-135M, where
# the model's own bf16 forward moves about as much when only the batch shape changes)
GAP_TOLERANCE = {"fp32": 1e-4, "bf16": 0.02, "fp16": 0.02}


def applies(cfg, backend: str) -> bool:
    """cfg.fast_step on the hf backend, on CPU, in one process ("auto" = on there, off elsewhere)."""
    from .runtime import has_cuda, num_processes

    if cfg.fast_step == "off" or backend != "hf" or cfg.vllm_mode in ("server", "colocate"):
        return False
    if has_cuda() or num_processes() > 1:
        return cfg.fast_step == "on" and num_processes() == 1
    return True


def group_rows(prompt_ids, prompt_mask) -> list[tuple[list[int], int]]:
    """Rows that share one prompt: [(row indices, real prompt length)], in first-seen order. Prompts are left-padded
    (TRL pads them on the left), so a prompt's real tokens are its last `length` ones."""
    groups: dict[tuple, list[int]] = {}
    lengths: dict[tuple, int] = {}
    for i in range(prompt_ids.shape[0]):
        m = prompt_mask[i].bool()
        n = int(m.sum())
        if n == 0 or not bool(m[m.shape[0] - n:].all()):
            raise ValueError("faststep: a prompt is not left-padded (real tokens must be the last ones)")
        key = tuple(prompt_ids[i, -n:].tolist())
        groups.setdefault(key, []).append(i)
        lengths[key] = n
    return [(rows, lengths[key]) for key, rows in groups.items()]


def _expanded_cache(cache, n: int):
    """A DynamicCache whose tensors are `cache`'s expanded to n rows (views: the gradient flows back to the prompt)."""
    from transformers import DynamicCache

    legacy = cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache
    return DynamicCache.from_legacy_cache(tuple((k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))
                                                for k, v in legacy))


class _TokenLogp:
    """log softmax(logits * scale)[target] for rows of logits (N, V), in fp32 chunk by chunk, with a hand-written
    backward (softmax minus one-hot, times the incoming gradient): the same values and gradients as
    `log_softmax(logits.float() * scale).gather(...)`, without full-vocabulary fp32 copies of the whole batch."""

    @staticmethod
    def apply(logits, targets, scale: float, chunk: int = 256):
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, logits, targets):
                out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
                lse = torch.empty_like(out)
                for i in range(0, logits.shape[0], chunk):
                    block = logits[i:i + chunk].to(torch.float32, copy=True)  # never a view: edited in place
                    if scale != 1.0:
                        block.mul_(scale)
                    lse[i:i + chunk] = torch.logsumexp(block, -1)
                    out[i:i + chunk] = block.gather(-1, targets[i:i + chunk, None]).squeeze(-1) - lse[i:i + chunk]
                ctx.save_for_backward(logits, targets, lse)
                return out

            @staticmethod
            def backward(ctx, grad):
                logits, targets, lse = ctx.saved_tensors
                result = torch.empty_like(logits)
                for i in range(0, logits.shape[0], chunk):
                    block = logits[i:i + chunk].to(torch.float32, copy=True)  # never a view: edited in place
                    if scale != 1.0:
                        block.mul_(scale)
                    g = grad[i:i + chunk, None]
                    block.sub_(lse[i:i + chunk, None]).exp_().mul_(-g)  # -softmax * g
                    block.scatter_add_(-1, targets[i:i + chunk, None], g)  # + one-hot * g
                    if scale != 1.0:
                        block.mul_(scale)
                    result[i:i + chunk] = block.to(logits.dtype)
                return result, None

        return Fn.apply(logits, targets)


def shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep: int, temperature: float):
    """Per-token log-probs (B, logits_to_keep) of the completion tokens, the prompt run once per group. Positions
    the completion mask leaves out (after EOS) get 0 and no compute: TRL's loss masks them."""
    import torch

    from .logprob import new_cache, body_and_head, causal_lm, hidden_states

    c = int(logits_to_keep)
    p = input_ids.shape[1] - c
    prompt_ids, prompt_mask = input_ids[:, :p], attention_mask[:, :p]
    comp_ids, comp_mask = input_ids[:, p:], attention_mask[:, p:]
    if causal_lm(model).config.model_type not in ("llama", "qwen2", "mistral"):
        raise ValueError("faststep: unsupported model type")
    body, head = body_and_head(model)
    if body is None:
        raise ValueError("faststep: no decoder body")
    out = None
    for rows, n_prompt in group_rows(prompt_ids, prompt_mask):
        idx = torch.tensor(rows, device=input_ids.device)
        n = len(rows)
        prompt = prompt_ids[rows[0], p - n_prompt:].unsqueeze(0)
        h_prompt, cache = hidden_states(model, prompt, torch.ones_like(prompt), past_key_values=new_cache())
        mask = comp_mask[idx]
        width = max(1, int(mask.sum(1).max()))  # the group's longest completion, EOS included
        full_mask = torch.cat([torch.ones(n, n_prompt, dtype=mask.dtype, device=mask.device), mask[:, :width]], 1)
        h_comp, _ = hidden_states(model, comp_ids[idx, :width], full_mask,
                                  past_key_values=_expanded_cache(cache, n))
        # the prompt's last position predicts completion token 0; completion position j predicts token j + 1
        h = torch.cat([h_prompt[:, -1:].expand(n, -1, -1), h_comp[:, :width - 1]], dim=1)
        keep = mask[:, :width].bool()
        logits = head(h[keep])  # only the positions the loss reads
        lp = _TokenLogp.apply(logits, comp_ids[idx, :width][keep], 1.0 / temperature)
        if out is None:
            out = lp.new_zeros(input_ids.shape[0], c)
        r, col = keep.nonzero(as_tuple=True)
        out = out.index_put((idx[r], col), lp)
    return out


def generator_gap(model, input_ids, attention_mask) -> float:
    """Mean KL(model || generator), nats, over one prompt's real positions: ~0 when the decoder computes the policy
    being trained."""
    from .fastgen import check_against_model

    return check_against_model(model, input_ids, attention_mask)


def trainer_class(base=None):
    """`base` (TRL's GRPOTrainer by default) with the fast generator and the shared-prompt loss forward."""
    if base is None:
        from trl import GRPOTrainer as base

    class FastStepGRPOTrainer(base):
        FAST_STEP = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            from . import fastgen

            self._fast_hook = fastgen.install(self.model)
            self._gap_tolerance = GAP_TOLERANCE.get(_dtype_name(self.model), 0.02)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if self._fast_hook is not None and self.model.training:
                ids, mask = out["prompt_ids"][:1], out["prompt_mask"][:1]
                gap = generator_gap(self.accelerator.unwrap_model(self.model), ids, mask)
                self._metrics["train"]["generator_gap"].append(gap)
                if not gap <= self._gap_tolerance:
                    raise RuntimeError(
                        f"faststep: the fast generator's next-token distributions differ from the model's by a mean KL of "
                        f"{gap:.3g} nats "
                        f"(tolerance {self._gap_tolerance}): it is not sampling from the policy being trained. "
                        "Set fast_step='off' in the config to use TRL's own generation, and report this.")
            return out

        def _get_per_token_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None):
            try:
                return shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, self.temperature)
            except ValueError:
                return super()._get_per_token_logps(model, input_ids, attention_mask, logits_to_keep, batch_size)

    return FastStepGRPOTrainer


def _dtype_name(model) -> str:
    dtype = next((p.dtype for n, p in model.named_parameters() if "lora_" not in n), None)
    return str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float32", "fp32").replace(
        "float16", "fp16")
