"""Start-up self-check: the GPU path tests itself on the user's machine, in its first minute.

Nobody who writes this curriculum can run Unsloth + vLLM on a GPU, and CI has no GPU, so the parts that
only exist there check themselves where they run, on every backend (CI runs them on CPU):

1. the logprob scorer (`helpers.logprob.score_targets`, fast path: LM head at target positions only,
   batching, prefix cache where allowed) agrees with the model's own causal forward (top-level
   `model(...)`, full-vocabulary log-softmax) on a few short sequences, within a tolerance that fits the
   dtype; and a target token's score does not change when more text is appended after it (a scorer that
   attends both ways fails this even if the reference were wrong too);
2. the precision matches the hardware (no bf16 below compute capability 8.0; the weights are in the dtype
   the run asked for; on CPU, bf16 without bf16 matrix units is allowed but noted as slow);
3. once an adapter is trained, the generator really uses it: vLLM's greedy output with the LoRA differs
   from the base model's on a fixed prompt (Unsloth), or the logits with the adapter on differ from the
   adapter off (hf); where the hf backend generates through helpers.fastgen's decoder (CPU), it computes the
   model's own distributions and follows a change of the adapter (`check_fast_generator`, at start-up; GRPO
   re-checks the first half at every step, helpers/faststep.py);
4. where a score compares the policy with its own base (notebook 05's implicit reward log pi_SFT - log pi_base,
   adapter on vs `model.disable_adapter()`), switching the adapter off really changes what the *scorer* computes
   (`check_reference`): on Unsloth the fast LoRA kernels must honour PEFT's disable flag, or every implicit
   reward would be exactly 0.

A failure raises SelfCheckError with what to do: on a GPU, the escape hatch is BACKEND='hf'
(transformers + peft, the path CI runs; slower, since generation then runs without vLLM).
"""
from __future__ import annotations

import math
from pathlib import Path

ESCAPE_HATCH = ("On a GPU, re-run with BACKEND='hf' in the notebook form (or --set backend=hf on the command line): "
                "the transformers + peft path that CI tests, slower because generation runs without vLLM. "
                "Please report the message above with the banner's package versions.")

# A chat-shaped context and a gold-answer target, the shape the reward scores.
_CHECK_PAIRS = [
    ("<|im_start|>user\nTom has 3 apples and buys 4 more. How many?<|im_end|>\n<|im_start|>assistant\n"
     "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n", "7\n</answer>"),
    ("<|im_start|>user\nA pen costs $2. How much do 9 pens cost?<|im_end|>\n<|im_start|>assistant\n"
     "<reasoning>\n9 pens at $2 each is 9 * 2 = 18 dollars.\n</reasoning>\n<answer>\n", "18\n</answer>"),
    ("<|im_start|>user\nWhat is half of 50?<|im_end|>\n<|im_start|>assistant\n<reasoning>\n", "50 / 2 = 25"),
]


class SelfCheckError(RuntimeError):
    """The self-check found the GPU path (or any backend) computing something wrong."""


def tolerance(model) -> float:
    """Largest allowed |Δ log-prob| between two ways of computing the same score, by the weights' dtype."""
    import torch

    dtype = _weight_dtype(model)
    return 2e-3 if dtype in (torch.float32, torch.float64) else 0.15  # 16-bit: ~3 significant digits


def _weight_dtype(model):
    from .logprob import body_and_head

    return body_and_head(model)[1].weight.dtype


def reference_logprobs(model, tokenizer, context: str, target: str) -> list[float]:
    """log P(target tokens) from the model's own top-level causal forward: full logits, log-softmax, gather."""
    import os

    import torch

    from .logprob import body_and_head, causal_lm, eval_mode, to_logits, encode_pair

    ids, first = encode_pair(tokenizer, context, target)
    head = body_and_head(model)[1]
    x = torch.tensor([ids], device=head.weight.device)
    saved = os.environ.pop("UNSLOTH_RETURN_HIDDEN_STATES", None)  # plain logits, as a user's forward gets them
    try:
        with torch.no_grad(), eval_mode(model):
            out = causal_lm(model)(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    finally:
        if saved is not None:
            os.environ["UNSLOTH_RETURN_HIDDEN_STATES"] = saved
    logits = to_logits(out.logits[0], head, head.weight.shape[0]).float().log_softmax(-1)
    return [logits[j - 1, ids[j]].item() for j in range(first, len(ids))]


def check_scorer(model, tokenizer) -> dict:
    """Scorer vs the model's causal forward, and causality. Returns the measured differences."""
    from .logprob import score_targets

    tol = tolerance(model)
    contexts = [c for c, _ in _CHECK_PAIRS]
    targets = [t for _, t in _CHECK_PAIRS]
    ref = [reference_logprobs(model, tokenizer, c, t) for c, t in _CHECK_PAIRS]
    worst = 0.0
    for kwargs in (dict(batch_size=len(contexts)), dict(batch_size=2, share_prefix=True, groups=["p"] * 3)):
        fast = score_targets(model, tokenizer, contexts, targets, **kwargs)
        for a, b in zip(fast, ref):
            if len(a) != len(b):
                raise SelfCheckError(f"Self-check failed: the scorer returned {len(a)} target tokens where the model's "
                                     f"tokenization has {len(b)}. " + ESCAPE_HATCH)
            worst = max(worst, max((abs(x - y) for x, y in zip(a, b)), default=0.0))
    if not math.isfinite(worst) or worst > tol:
        raise SelfCheckError(
            f"Self-check failed: the logprob scorer disagrees with the model's own causal forward by up to "
            f"{worst:.3g} nats per token (allowed {tol:g} for {_weight_dtype(model)}). Rewards and gold "
            "perplexities would be wrong. " + ESCAPE_HATCH)
    # Causality: appending text after the target must not change the target's scores.
    context, target = _CHECK_PAIRS[1]
    short = score_targets(model, tokenizer, [context], [target])[0]
    longer = score_targets(model, tokenizer, [context], [target + "\nThat is all, and more words follow here."])[0]
    leak = max(abs(x - y) for x, y in zip(short, longer[:len(short)]))
    if not math.isfinite(leak) or leak > tol:
        raise SelfCheckError(
            f"Self-check failed: the scorer is not causal (a token's log-prob changed by {leak:.3g} nats when text "
            "was appended after it: the model attends both ways). " + ESCAPE_HATCH)
    return {"scorer_max_abs_diff": worst, "causal_leak": leak, "tolerance": tol}


def check_precision(model, precision: str) -> dict:
    """The resolved precision fits the hardware, and the weights are in that dtype (16-bit on a GPU; on CPU bf16
    weights for bf16, which "auto" picks only with AMX / AVX512-BF16: runtime.cpu_bf16_matmul)."""
    import torch

    from . import runtime

    info = runtime.gpu_info()
    if precision == "bf16" and info is not None and not runtime.bf16_supported():
        raise SelfCheckError(
            f"Self-check failed: precision bf16 on {info['name']} (compute capability "
            f"{'.'.join(map(str, info['capability']))}), which has no bf16. Use the t4 preset or precision='auto'.")
    want = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    got = _weight_dtype(model)
    if got != want and not (info is None and got == torch.float32):
        raise SelfCheckError(
            f"Self-check failed: the run asked for {precision} but the model's output layer is {got}. Training would "
            f"stop with a precision error, or run at the wrong precision. " + ESCAPE_HATCH)
    out = {"precision": precision, "weights": str(got).replace("torch.", ""), "gpu": info["name"] if info else "none"}
    if info is None and got == torch.bfloat16 and not runtime.cpu_bf16_matmul():
        out["note"] = ("bf16 weights on a CPU without bf16 matrix units in use (no amx_bf16 / avx512_bf16 found, or "
                       "HELPERS_CPU_BF16=0): bf16 may be emulated and slower than fp32; precision='auto' picks fp32")
        print(f"[self-check] note: {out['note']}")
    return out


def run(model, tokenizer, cfg, backend: str) -> dict:
    """The start-up checks (scorer, causality, precision); prints one line, raises SelfCheckError on failure."""
    import time

    from .runtime import resolve_precision

    t0 = time.time()
    out = {"backend": backend, **check_precision(model, resolve_precision(cfg.precision)),
           **check_scorer(model, tokenizer), **check_fast_generator(model, tokenizer)}
    out["seconds"] = round(time.time() - t0, 2)
    fast = (f", fast generator = model (mean KL {out['generator_kl']:.1e}) and follows the adapter"
            if "generator_kl" in out else "")
    print(f"[self-check] ok on {backend}: scorer = causal forward within {out['scorer_max_abs_diff']:.1e} nats "
          f"(tolerance {out['tolerance']:g}), causal{fast}, weights {out['weights']} on "
          f"{out['gpu'] if out['gpu'] not in (None, 'none') else 'the CPU'} "
          f"({out['seconds']} s)")
    return out


def check_fast_generator(model, tokenizer) -> dict:
    """Where `model.generate` is helpers.fastgen's decoder (hf backend on CPU): it computes the model's own
    next-token distributions (mean KL within faststep.GAP_TOLERANCE), and it follows the adapter: after a
    perturbation of every LoRA B matrix (undone at once) its distributions move and still match the model's, so a
    decoder reading stale weights fails here. {} when the decoder is not installed."""
    import torch

    from . import fastgen
    from .faststep import GAP_TOLERANCE
    from .logprob import eval_mode

    if fastgen.installed(model) is None:
        return {}
    text = tokenizer.apply_chat_template(_ADAPTER_PROMPT, tokenize=False, add_generation_prompt=True)
    enc = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    dtype = str(_weight_dtype(model)).replace("torch.", "")
    tol = GAP_TOLERANCE["fp32" if dtype == "float32" else "bf16"]
    decoder = fastgen.installed(model).decoder
    with eval_mode(model):  # the decoder refuses LoRA dropout in training mode
        kl = fastgen.check_against_model(model, ids, mask)
        before = torch.log_softmax(decoder.logits(ids, mask), -1)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        saved = [p.detach().clone() for p in lora_b]
        try:
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in lora_b:
                    p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
            after = torch.log_softmax(decoder.logits(ids, mask), -1)
            kl_after = fastgen.check_against_model(model, ids, mask)
        finally:
            with torch.no_grad():
                for p, old in zip(lora_b, saved):
                    p.copy_(old)
    moved = float((before.exp() * (before - after)).sum(-1).mean()) if lora_b else 0.0
    if not kl <= tol or not kl_after <= tol:
        raise SelfCheckError(f"Self-check failed: the fast generator's next-token distributions differ from the "
                             f"model's (mean KL {max(kl, kl_after):.3g} nats, tolerance {tol}). Set "
                             "fast_step='off' (RunConfig) to generate with transformers' generate, and report this.")
    if lora_b and not moved > max(10 * max(kl, kl_after), 1e-3):  # far beyond the decoder's own rounding
        raise SelfCheckError(f"Self-check failed: changing the LoRA adapter moved the fast generator's "
                             f"distributions by only {moved:.3g} nats (mean KL): it does not read the current "
                             "adapter. Set fast_step='off' (RunConfig) and report this.")
    return {"generator_kl": kl, "generator_kl_perturbed": kl_after, "generator_follows_adapter": moved}


# ---------------------------------------------------------------------------------------
# The adapter reaches the generator
_ADAPTER_PROMPT = [{"role": "user", "content": "Natalia sold clips to 48 friends in April and half as many in May. "
                                               "How many clips did she sell altogether?"}]


def adapter_is_trained(model) -> bool:
    """True when some LoRA B matrix is non-zero (a fresh adapter has B = 0 and changes nothing)."""
    return any("lora_B" in n and p.detach().abs().sum().item() > 0 for n, p in model.named_parameters())


def check_adapter(model, tokenizer, backend: str, lora_path: str | Path | None = None) -> dict:
    """The trained adapter changes what the generator computes; SelfCheckError if it does not.

    unsloth: vLLM greedy generation of a fixed prompt with `lora_path` vs without it (text and cumulative
    log-prob). hf: the logits of the same prompt with the adapter on vs off (peft's disable_adapter)."""
    if not adapter_is_trained(model):
        return {"adapter_check": "skipped (adapter untrained)"}
    prompt = tokenizer.apply_chat_template(_ADAPTER_PROMPT, tokenize=False, add_generation_prompt=True)
    if backend == "unsloth":
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=32, logprobs=1, seed=0)
        base = model.fast_generate([prompt], sampling_params=params, lora_request=None, use_tqdm=False)[0].outputs[0]
        lora = model.load_lora(str(lora_path)) if lora_path else None
        tuned = model.fast_generate([prompt], sampling_params=params, lora_request=lora, use_tqdm=False)[0].outputs[0]
        delta = abs((tuned.cumulative_logprob or 0.0) - (base.cumulative_logprob or 0.0))
        if lora is None or (tuned.text == base.text and delta < 1e-6):
            raise SelfCheckError(
                "Self-check failed: vLLM generates exactly the same text with the trained LoRA as without it "
                f"({lora_path}): the adapter did not reach vLLM, so evaluations would show the base model. "
                + ESCAPE_HATCH)
        return {"adapter_check": "ok", "logprob_delta": delta}
    import torch

    from .logprob import eval_mode

    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad(), eval_mode(model):
        on = model(**enc).logits.float()
        with model.disable_adapter():
            off = model(**enc).logits.float()
    delta = (on - off).abs().max().item()
    if not delta > 0:
        raise SelfCheckError("Self-check failed: the trained adapter does not change the model's logits. " + ESCAPE_HATCH)
    return {"adapter_check": "ok", "logit_delta": delta}


def check_reference(model, tokenizer) -> dict:
    """The scorer sees the adapter switched off: with a trained adapter, log pi(t) - log pi_base(t) on fixed pairs
    (`rerank.token_logratios`, adapter on vs `disable_adapter`) is finite and not all zero. SelfCheckError if the
    ratios are all 0 (the reference is the policy itself, so an implicit reward would be 0 everywhere) or not
    finite."""
    if not adapter_is_trained(model):
        return {"reference_check": "skipped (adapter untrained)"}
    from .rerank import token_logratios

    contexts, targets = zip(*_CHECK_PAIRS)
    ratios = [r for rs in token_logratios(model, tokenizer, contexts, targets) if rs is not None for r in rs]
    if not ratios or not all(math.isfinite(r) for r in ratios):
        raise SelfCheckError(f"Self-check failed: log pi - log pi_base is not finite on the check pairs ({ratios[:4]}). "
                             + ESCAPE_HATCH)
    biggest = max(abs(r) for r in ratios)
    if biggest == 0.0:
        raise SelfCheckError(
            "Self-check failed: scoring with the adapter switched off (model.disable_adapter()) gives exactly the "
            "scores with it on, so the implicit reward log pi_SFT - log pi_base would be 0 for every completion. "
            + ESCAPE_HATCH)
    return {"reference_check": "ok", "max_abs_logratio": biggest}
