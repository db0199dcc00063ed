"""Fast CPU generation for the hf backend: a lean decode loop over the model's current weights.

On a 2-core CPU, SmolLM2-135M's decode step is bound by per-operation overhead, not by arithmetic: `model.generate`
spends most of a token outside the matrix products (generation utilities, cache objects, mask building, peft's
per-layer dispatch and casts). This module decodes the same model with a short loop of plain torch ops:

- at the start of every call the weights are read from the live modules (`refresh`): q/k/v and gate/up fused into
  one matrix each, and the LoRA adapter folded in (W + s B A, rounded once to the base dtype), as TRL's vLLM path
  syncs merged weights into vLLM; with merge=False it is added unmerged, exactly as peft's `lora.Linear.forward` does.
  Nothing is kept between calls, so the generator cannot lag behind training;
- a preallocated KV cache, each distinct prompt prefilled once (a GRPO group's G copies share it; left padding and
  HF's position ids), eager attention with the softmax in fp32 (as transformers' eager attention, which the CPU
  16-bit path uses), grouped-query heads without copies;
- rows that have finished (emitted EOS) are dropped from the batch, and the loop stops when every row is done.

Sampling matches TRL 0.18's GenerationConfig on the hf path: temperature, top_k (None/0 = off), top_p (1.0 = off),
min_new_tokens; greedy when do_sample is False; num_return_sequences as generate expands it. Anything else
(repetition penalty, min_p, beams, stop strings, a model that is not a Llama- or Qwen2-style decoder, LoRA dropout
while training, DoRA) falls back to the model's own `generate`, so the fast path is an optimisation, never another
behaviour. `check_against_model` measures the decoder against the model's own forward (mean KL over positions);
helpers/faststep.py calls it at every GRPO step, tests/test_faststep.py pins greedy tokens equal to `generate`'s.

`install(model)` makes `model.generate` use it (TRL calls `unwrapped_model.generate(prompt_ids, attention_mask=...,
generation_config=...)`; helpers.training installs it at load on the hf backend on CPU, so evaluations and probes
are fast too); `uninstall(model)` restores the original.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


class Unsupported(Exception):
    """The fast path does not cover this model or request: the caller falls back to `model.generate`."""


def _core(model):
    """The bare `*ForCausalLM` under a PeftModel (or the model itself)."""
    inner = model
    if hasattr(inner, "base_model") and hasattr(inner.base_model, "model") and hasattr(inner, "peft_config"):
        inner = inner.base_model.model
    return inner


@dataclass
class _Fused:
    """Projections that read the same input, fused for one generate call, built from the live modules at the start
    of every call (so never stale). Merged (the default): y = x (W + s B A)^T, the adapter folded into a copy of the
    base weights rounded once to their dtype, as TRL's vLLM path syncs merged weights into vLLM; in bf16 that rounding
    moves the next-token distributions by a mean KL of ~2e-3 nats on SmolLM2-135M, the same as the model's own bf16
    forward moves between two batch shapes. Unmerged (merge=False): y = x W^T + s B(A(x in fp32)), rounded back to
    the base dtype, the sum peft's `lora.Linear.forward` computes (about 20 % slower a token on 2 cores)."""
    weight: object
    bias: object | None
    lora_a: object | None
    lora_b: object | None

    def __call__(self, x):
        import torch.nn.functional as F

        y = F.linear(x, self.weight, self.bias)
        if self.lora_a is None:
            return y
        delta = F.linear(F.linear(x.to(self.lora_a.dtype), self.lora_a), self.lora_b)
        return (y + delta).to(y.dtype)


def _parts(module):
    """(base nn.Linear, [(A, B, scaling) of each active adapter]) of a projection, peft-wrapped or not."""
    if not (hasattr(module, "base_layer") and hasattr(module, "lora_A")):
        return module, []
    if module.disable_adapters or module.merged:
        return module.base_layer, []
    adapters = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if module.use_dora.get(name, False):
            raise Unsupported("DoRA adapter")
        adapters.append((module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]))
    return module.base_layer, adapters


def _fuse(modules, merge: bool = True) -> _Fused:
    import torch

    parts = [_parts(m) for m in modules]
    bases = [b for b, _ in parts]
    weight = bases[0].weight if len(bases) == 1 else torch.cat([b.weight for b in bases], 0)
    biases = [b.bias for b in bases]
    bias = None
    if any(x is not None for x in biases):
        bias = torch.cat([x if x is not None else torch.zeros(b.weight.shape[0], dtype=b.weight.dtype)
                          for x, b in zip(biases, bases)], 0)
    blocks = [(i, a, b_, s) for i, (_, adapters) in enumerate(parts) for a, b_, s in adapters]
    if not blocks:
        return _Fused(weight, bias, None, None)
    dtype = blocks[0][1].dtype
    lora_a = torch.cat([a.to(dtype) for _, a, _, _ in blocks], 0)
    outs = [b.weight.shape[0] for b in bases]
    offsets = [sum(outs[:i]) for i in range(len(outs))]
    lora_b = torch.zeros(sum(outs), lora_a.shape[0], dtype=dtype)
    col = 0
    for i, a, b_, s in blocks:
        r = a.shape[0]
        lora_b[offsets[i]:offsets[i] + outs[i], col:col + r] = b_.to(dtype) * s
        col += r
    if merge:  # one matmul a token instead of four ops: W + B A, rounded once to the base dtype
        return _Fused(torch.addmm(weight.to(dtype), lora_b, lora_a).to(weight.dtype), bias, None, None)
    return _Fused(weight, bias, lora_a, lora_b)


class FastDecoder:
    """Greedy or sampled decoding of a Llama/Qwen2-style causal LM (optionally wrapped by peft) on its live weights."""

    def __init__(self, model, merge: bool = True):
        self.merge = merge
        core = _core(model)
        cfg = core.config
        if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
            raise Unsupported(f"model type {getattr(cfg, 'model_type', None)!r}")
        if getattr(cfg, "use_sliding_window", False):
            raise Unsupported("sliding-window attention")
        self.model, self.core, self.cfg = model, core, cfg
        body = core.model
        self.embed, self.norm, self.rotary = body.embed_tokens, body.norm, body.rotary_emb
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scaling = self.head_dim ** -0.5
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu":
            raise Unsupported(f"activation {act!r}")
        self.body = body
        self.q_out = self.n_heads * self.head_dim
        self.kv_out = self.n_kv * self.head_dim
        self.layers: list[dict] = []  # filled by refresh(), which every generate/logits call runs first
        self.lm_head = None

    def refresh(self) -> None:
        """Read the model's current weights (base and adapter) into fused projections. Called at the start of every
        generate/logits call: a LoRA update between two calls is always seen."""
        self.layers = []
        for layer in self.body.layers:
            at, mlp = layer.self_attn, layer.mlp
            self.layers.append(dict(
                ln1=layer.input_layernorm, ln2=layer.post_attention_layernorm,
                qkv=_fuse([at.q_proj, at.k_proj, at.v_proj], self.merge), o=_fuse([at.o_proj], self.merge),
                gate_up=_fuse([mlp.gate_proj, mlp.up_proj], self.merge), down=_fuse([mlp.down_proj], self.merge)))
        self.lm_head = _fuse([self.core.lm_head], self.merge)

    # ------------------------------------------------------------------------------------------------
    def _check_usable(self):
        """Unsupported when peft would apply LoRA dropout (training mode, p > 0): the fast path never samples from a
        different model than `generate` would."""
        if not self.model.training:
            return
        for module in self.body.modules():
            drops = getattr(module, "lora_dropout", None)
            if drops is not None and not getattr(module, "disable_adapters", False):
                if any(getattr(d, "p", 0.0) > 0 for d in drops.values()):
                    raise Unsupported("LoRA dropout is active (training mode)")

    @staticmethod
    def _rms(norm, x):
        import torch

        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(dtype)

    @staticmethod
    def _rope(x, cos, sin):
        import torch

        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def _forward(self, ids, positions, mask_add, cache_k, cache_v, start: int):
        """Hidden states of `ids` (B, T) at absolute cache slots start..start+T-1; writes their K/V into the cache.

        mask_add: additive attention mask (B, 1, T, start+T) in the compute dtype (0 = attend, min = masked)."""
        import torch

        bsz, t = ids.shape
        end = start + t
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        groups = self.n_heads // self.n_kv
        for i, layer in enumerate(self.layers):
            x = self._rms(layer["ln1"], h)
            qkv = layer["qkv"](x)
            # RoPE on queries and keys at once: they sit side by side in the fused projection's output
            qk = self._rope(qkv[..., :self.q_out + self.kv_out].reshape(bsz, t, self.n_heads + self.n_kv,
                                                                        self.head_dim).transpose(1, 2), cos, sin)
            q, k = qk[:, :self.n_heads], qk[:, self.n_heads:]
            v = qkv[..., self.q_out + self.kv_out:].reshape(bsz, t, self.n_kv, self.head_dim).transpose(1, 2)
            cache_k[i][:bsz, :, start:end] = k
            cache_v[i][:bsz, :, start:end] = v
            keys, values = cache_k[i][:bsz, :, :end], cache_v[i][:bsz, :, :end]
            # grouped-query attention without repeat_kv: (B, kv, groups*T, d) x (B, kv, d, S)
            qg = q.reshape(bsz, self.n_kv, groups * t, self.head_dim)
            w = torch.matmul(qg, keys.transpose(2, 3)) * self.scaling
            w = w.view(bsz, self.n_kv, groups, t, end) + mask_add.unsqueeze(1)
            w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            a = torch.matmul(w.view(bsz, self.n_kv, groups * t, end), values)
            a = a.view(bsz, self.n_heads, t, self.head_dim).transpose(1, 2).reshape(bsz, t, -1)
            h = h + layer["o"](a)
            x = self._rms(layer["ln2"], h)
            gu = layer["gate_up"](x)
            half = gu.shape[-1] // 2
            h = h + layer["down"](torch.nn.functional.silu(gu[..., :half]) * gu[..., half:])
        return self._rms(self.norm, h)

    def logits(self, input_ids, attention_mask):
        """Next-token logits (fp32) at every position of left-padded `input_ids`: for checks against the model."""
        import torch

        with torch.inference_mode():
            self.refresh()
            cache_k, cache_v, dtype = self._cache(input_ids.shape[0], input_ids.shape[1])
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            mask_add = self._prefill_mask(attention_mask, dtype)
            h = self._forward(input_ids, positions, mask_add, cache_k, cache_v, 0)
            return self.lm_head(h).float()

    def _cache(self, bsz: int, length: int):
        import torch

        dtype = self.embed.weight.dtype
        shape = (bsz, self.n_kv, length, self.head_dim)
        ks = [torch.empty(shape, dtype=dtype) for _ in self.layers]
        vs = [torch.empty(shape, dtype=dtype) for _ in self.layers]
        return ks, vs, dtype

    @staticmethod
    def _prefill_mask(attention_mask, dtype):
        import torch

        t = attention_mask.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = causal.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # (B, T, T)
        mask = torch.zeros(allowed.shape, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask.unsqueeze(1)

    # ------------------------------------------------------------------------------------------------
    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int, do_sample: bool = True,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id=None, pad_token_id: int = 0, min_new_tokens: int = 0):
        """prompt + completion ids (B, P + longest completion), completions padded with `pad_token_id` after EOS,
        as `model.generate` returns them."""
        import torch

        self._check_usable()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        eos_t = torch.tensor(sorted(eos), dtype=torch.long) if eos else None
        bsz, plen = input_ids.shape
        with torch.inference_mode():
            self.refresh()  # the model's weights as they are now: a generator that cannot lag behind training
            cache_k, cache_v, dtype = self._cache(bsz, plen + max_new_tokens)
            out = torch.full((bsz, max_new_tokens), pad_token_id, dtype=torch.long)
            masked_min = torch.finfo(dtype).min
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
            logits = self._prefill(input_ids, attention_mask, positions, cache_k, cache_v, dtype)
            # the key mask over cache slots: prompt padding is masked for good; new slots are attended
            key_ok = torch.ones(bsz, plen + max_new_tokens, dtype=torch.bool)
            key_ok[:, :plen] = attention_mask.bool()
            alive = torch.arange(bsz)  # original row index of each row still decoding
            pos = positions[:, -1]
            steps = 0
            for step in range(max_new_tokens):
                steps = step + 1
                tok = self._pick(logits, do_sample, temperature, top_k, top_p,
                                 suppress=eos_t if step < min_new_tokens else None)
                out[alive, step] = tok
                if eos_t is not None and step + 1 < max_new_tokens:
                    done = torch.isin(tok, eos_t)
                    if bool(done.any()):
                        keep = (~done).nonzero().squeeze(1)
                        if keep.numel() == 0:
                            break
                        alive, tok, pos, key_ok = alive[keep], tok[keep], pos[keep], key_ok[keep]
                        n = keep.numel()
                        for i in range(len(self.layers)):  # compact the cache so the live rows come first
                            cache_k[i][:n] = cache_k[i][keep]
                            cache_v[i][:n] = cache_v[i][keep]
                if step + 1 == max_new_tokens:
                    break
                n = alive.numel()
                slot = plen + step
                pos = pos + 1
                mask_add = torch.zeros(n, 1, 1, slot + 1, dtype=dtype)
                mask_add.masked_fill_(~key_ok[:, None, None, :slot + 1], masked_min)
                h = self._forward(tok[:, None], pos[:, None], mask_add, cache_k, cache_v, slot)
                logits = self.lm_head(h[:, 0]).float()
        return torch.cat([input_ids, out[:, :steps]], dim=1)

    def _prefill(self, input_ids, attention_mask, positions, cache_k, cache_v, dtype):
        """Run the prompts, fill the cache, return the next-token logits (fp32). Identical rows (a GRPO group's G
        copies of one prompt) are run once and their cache copied G times."""
        import torch

        keys: dict[tuple, int] = {}
        first, inverse = [], []
        for i in range(input_ids.shape[0]):
            key = tuple(input_ids[i].tolist()) + tuple(attention_mask[i].tolist())
            if key not in keys:
                keys[key] = len(first)
                first.append(i)
            inverse.append(keys[key])
        if len(first) == input_ids.shape[0]:
            h = self._forward(input_ids, positions, self._prefill_mask(attention_mask, dtype), cache_k, cache_v, 0)
            return self.lm_head(h[:, -1].contiguous()).float()  # 2-D: one matmul
        uniq = torch.tensor(first)
        plen = input_ids.shape[1]
        k_u, v_u, _ = self._cache(len(first), plen)
        h = self._forward(input_ids[uniq], positions[uniq], self._prefill_mask(attention_mask[uniq], dtype),
                          k_u, v_u, 0)
        inv = torch.tensor(inverse)
        for i in range(len(self.layers)):
            cache_k[i][:, :, :plen] = k_u[i][inv]
            cache_v[i][:, :, :plen] = v_u[i][inv]
        return self.lm_head(h[:, -1].contiguous()).float()[inv]

    @staticmethod
    def _pick(logits, do_sample, temperature, top_k, top_p, suppress=None):
        import torch

        if suppress is not None:
            logits = logits.clone()
            logits[:, suppress] = -math.inf
        if not do_sample:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if top_p is not None and top_p < 1.0:  # as transformers' TopPLogitsWarper (keeps at least one token)
            sorted_logits, idx = torch.sort(logits, descending=False)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            remove_sorted = cum <= (1 - top_p)
            remove_sorted[:, -1] = False
            remove = remove_sorted.scatter(1, idx, remove_sorted)
            logits = logits.masked_fill(remove, -math.inf)
        # inverse-CDF sampling: the categorical distribution of softmax(logits), as torch.multinomial draws it,
        # without multinomial's exponential draw over the whole vocabulary (14 ms a step at batch 16 on one core)
        cdf = torch.softmax(logits, dim=-1).cumsum_(-1)
        u = torch.rand(cdf.shape[0], 1) * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


# ----------------------------------------------------------------------------------------------------
# model.generate, redirected
def _request(kwargs: dict, generation_config, model) -> dict:
    """The decoding request in FastDecoder.generate's terms, or Unsupported."""
    gc = generation_config or model.generation_config
    extra = {k: v for k, v in kwargs.items() if k not in ("use_model_defaults",)}
    if extra:
        gc = gc.__class__.from_dict({**gc.to_dict(), **extra}) if hasattr(gc, "to_dict") else gc
    if getattr(gc, "num_beams", 1) not in (1, None):
        raise Unsupported("beam search")
    if getattr(gc, "repetition_penalty", 1.0) not in (1.0, None):
        raise Unsupported("repetition_penalty")
    if getattr(gc, "min_p", None):
        raise Unsupported("min_p")
    for name in ("bad_words_ids", "force_words_ids", "suppress_tokens", "begin_suppress_tokens", "stop_strings",
                 "no_repeat_ngram_size"):
        if getattr(gc, name, None):
            raise Unsupported(name)
    if not gc.max_new_tokens:
        raise Unsupported("max_new_tokens unset")
    return dict(max_new_tokens=int(gc.max_new_tokens), do_sample=bool(gc.do_sample),
                temperature=float(gc.temperature or 1.0), top_k=gc.top_k, top_p=gc.top_p,
                eos_token_id=gc.eos_token_id, pad_token_id=gc.pad_token_id if gc.pad_token_id is not None else 0,
                min_new_tokens=int(gc.min_new_tokens or 0), n=int(gc.num_return_sequences or 1))


class FastGenerate:
    """Stands in for `model.generate`: the fast decoder when it covers the request, else the original method.

    `calls` counts (fast, fallback) calls and `last_fallback` says why the last fallback happened."""

    def __init__(self, model, original):
        self.model, self.original = model, original
        self.decoder = FastDecoder(model)
        self.calls = {"fast": 0, "fallback": 0}
        self.last_fallback = ""

    def __call__(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        other = {k: v for k, v in kwargs.items() if k not in ("use_model_defaults",)}
        try:
            if input_ids is None or input_ids.device.type != "cpu":
                raise Unsupported("not a CPU tensor")
            known = {k: other.pop(k) for k in list(other) if k in (
                "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "min_new_tokens",
                "num_return_sequences", "pad_token_id", "eos_token_id")}
            if other:
                raise Unsupported(f"arguments {sorted(other)}")
            req = _request(known, generation_config, self.model)
            n = req.pop("n")
            ids, mask = input_ids, attention_mask
            if n > 1:  # as generate expands num_return_sequences: each prompt's n rows side by side
                ids = ids.repeat_interleave(n, dim=0)
                mask = None if mask is None else mask.repeat_interleave(n, dim=0)
            out = self.decoder.generate(ids, mask, **req)
        except Unsupported as why:
            self.calls["fallback"] += 1
            self.last_fallback = str(why)
            return self.original(input_ids=input_ids, attention_mask=attention_mask,
                                 generation_config=generation_config, **kwargs)
        self.calls["fast"] += 1
        return out


def install(model) -> FastGenerate | None:
    """Route `model.generate` through the fast decoder (CPU, supported models). Returns the hook, or None when the
    model is not covered (its own generate stays)."""
    current = model.__dict__.get("generate")
    if isinstance(current, FastGenerate):
        return current
    try:
        hook = FastGenerate(model, model.generate)
    except Unsupported:
        return None
    model.generate = hook  # an instance attribute shadows the class's method
    return hook


def uninstall(model) -> None:
    if isinstance(model.__dict__.get("generate"), FastGenerate):
        del model.generate


def installed(model) -> FastGenerate | None:
    hook = model.__dict__.get("generate")
    return hook if isinstance(hook, FastGenerate) else None


def check_against_model(model, input_ids, attention_mask, merge: bool = True) -> float:
    """Mean KL(model || fast decoder) in nats over the real (unpadded) positions of a left-padded batch: ~0 when the
    generator computes the policy being trained. In 16-bit the model disagrees with itself by about as much when
    only the batch shape changes (SmolLM2-135M, bf16: mean KL ~2e-3, while a stale or missing adapter moves whole
    distributions), so the tolerance is per precision (faststep.GAP_TOLERANCE)."""
    import torch

    dec = FastDecoder(model, merge=merge)
    with torch.no_grad():
        ours = torch.log_softmax(dec.logits(input_ids, attention_mask), -1)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        theirs = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits.float()
        theirs = torch.log_softmax(theirs, -1)
    kl = (theirs.exp() * (theirs - ours)).sum(-1)
    return float(kl[attention_mask.bool()].mean())
