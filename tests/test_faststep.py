"""The cheaper hf step (helpers/fastgen.py, helpers/faststep.py): the same step as TRL's, computed with less work.

Checked on the real SmolLM2-135M in fp32 with a non-zero LoRA adapter: the fast decoder computes the model's own
next-token distributions and follows every change of the adapter (it cannot go stale), greedy decoding gives the
same tokens as `model.generate`, finished rows stop and are padded as `generate` pads them, requests it does not
cover fall back to `generate`, sampling draws from the warped distribution; the shared-prompt loss forward gives
TRL's log-probs and LoRA gradients; a trainer whose generator disagrees with the model stops with a message.
"""
import math

import pytest
import torch

from helpers import config, data, faststep, fastgen, logprob, tasks, training


@pytest.fixture(scope="module")
def lora_model():
    """The smoke preset's LoRA model (fp32) with a random, non-zero adapter, and 6 left-padded arith prompts."""
    cfg = config.preset("smoke", precision="fp32")
    model, tok = training.load_model(cfg, "hf")
    assert fastgen.installed(model) is not None  # the hf backend on CPU generates through the fast decoder
    fastgen.uninstall(model)  # the tests install it where they compare it with model.generate
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    rows = tasks.train_rows("arith", 3)
    texts = [logprob.prompt_text(tok, data.make_prompt(r["question"])) for r in rows for _ in range(2)]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    model.eval()
    return model, tok, enc


def _lora_b(model):
    return [p for n, p in model.named_parameters() if "lora_B" in n]


def test_decoder_computes_the_model_and_follows_the_adapter(lora_model):
    model, tok, enc = lora_model
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask[0].sum() < mask.shape[1] or mask[-1].sum() < mask.shape[1], "want a left-padded batch"
    for merge in (True, False):
        assert fastgen.check_against_model(model, ids, mask, merge=merge) < 1e-6
    dec = fastgen.FastDecoder(model)
    before = torch.log_softmax(dec.logits(ids[:1], mask[:1]), -1)
    saved = [p.detach().clone() for p in _lora_b(model)]
    try:
        with torch.no_grad():
            for p in _lora_b(model):
                p.add_(torch.randn_like(p) * 0.02)  # a training step's worth of change, and more
        after = torch.log_softmax(dec.logits(ids[:1], mask[:1]), -1)  # the same decoder object, no sync call
        moved = float((before.exp() * (before - after)).sum(-1).mean())
        assert moved > 1e-3, "the adapter change did not reach the decoder"
        assert fastgen.check_against_model(model, ids[:1], mask[:1]) < 1e-6  # and it matches the model again
    finally:
        with torch.no_grad():
            for p, s in zip(_lora_b(model), saved):
                p.copy_(s)


def test_greedy_tokens_equal_model_generate(lora_model):
    model, tok, enc = lora_model
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id)
    with torch.no_grad():
        theirs = model.generate(**enc, generation_config=cfg)
    hook = fastgen.install(model)
    try:
        ours = model.generate(**enc, generation_config=cfg)
        assert hook.calls == {"fast": 1, "fallback": 0}
    finally:
        fastgen.uninstall(model)
    assert "generate" not in model.__dict__
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs)


def test_finished_rows_stop_and_are_padded(lora_model):
    model, tok, enc = lora_model
    dec = fastgen.FastDecoder(model)
    ids, mask = enc["input_ids"][:2], enc["attention_mask"][:2]
    probe = dec.generate(ids, mask, max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=0)
    first = int(probe[0, -1])  # row 0's greedy first token: call it EOS, so row 0 finishes at once
    out = dec.generate(ids, mask, max_new_tokens=12, do_sample=False, eos_token_id=[first],
                       pad_token_id=tok.pad_token_id)
    comp = out[:, ids.shape[1]:]
    assert int(comp[0, 0]) == first and (comp[0, 1:] == tok.pad_token_id).all()
    forced = dec.generate(ids, mask, max_new_tokens=12, do_sample=False, eos_token_id=[first],
                          pad_token_id=tok.pad_token_id, min_new_tokens=12)
    assert forced.shape[1] == ids.shape[1] + 12 and not (forced[:, ids.shape[1]:] == first).any()


def test_unsupported_requests_fall_back_to_generate(lora_model):
    model, tok, enc = lora_model
    from transformers import GenerationConfig

    hook = fastgen.install(model)
    try:
        cfg = GenerationConfig(max_new_tokens=4, do_sample=False, repetition_penalty=1.3,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out = model.generate(**enc, generation_config=cfg)
        assert out.shape[0] == enc["input_ids"].shape[0]
        assert hook.calls["fallback"] == 1 and "repetition_penalty" in hook.last_fallback
    finally:
        fastgen.uninstall(model)


def test_sampling_draws_from_the_warped_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(20000, 1)
    for top_k, top_p, temperature in ((None, 1.0, 1.0), (3, 1.0, 0.7), (None, 0.8, 1.0)):
        draws = fastgen.FastDecoder._pick(logits, True, temperature, top_k, top_p)
        want = logits[0] / temperature
        if top_k:
            want = want.masked_fill(want < want.topk(top_k).values[-1], -math.inf)
        if top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p
            probs = want.softmax(-1)
            order = probs.argsort(descending=True)
            cum = probs[order].cumsum(0)
            drop = order[(cum - probs[order]) >= top_p]
            want = want.clone()
            want[drop] = -math.inf
        p = want.softmax(-1)
        seen = torch.bincount(draws, minlength=5).float() / draws.numel()
        assert torch.allclose(seen, p, atol=0.015), (top_k, top_p, seen, p)
        assert (seen[p == 0] == 0).all()


def test_shared_prompt_logps_equal_trl_and_their_gradients(lora_model):
    from trl.trainer.utils import selective_log_softmax

    model, tok, enc = lora_model
    n, c = enc["input_ids"].shape[0], 14
    torch.manual_seed(1)
    comp = torch.randint(100, 5000, (n, c))
    cmask = torch.ones(n, c, dtype=torch.long)
    for i in range(n):  # completions that end (EOS, then padding) at different lengths
        end = 5 + i
        if end < c:
            comp[i, end] = tok.eos_token_id
            comp[i, end + 1:] = tok.pad_token_id
            cmask[i, end + 1:] = 0
    ids = torch.cat([enc["input_ids"], comp], 1)
    mask = torch.cat([enc["attention_mask"], cmask], 1)
    weights = torch.linspace(-1, 1, n)
    model.train()

    def run(fn):
        model.zero_grad()
        lp = fn()
        ((lp * cmask).sum(-1) * weights).sum().backward()
        return lp.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def stock():  # TRL 0.18.2 GRPOTrainer._get_per_token_logps, temperature 0.7
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=c + 1).logits[:, :-1][:, -c:]
        return selective_log_softmax(logits / 0.7, ids[:, -c:])

    try:
        a, ga = run(stock)
        b, gb = run(lambda: faststep.shared_prompt_logps(model, ids, mask, c, 0.7))
    finally:
        model.zero_grad()
        model.eval()
    real = cmask.bool()
    assert (a - b).abs()[real].max() < 1e-4
    assert (b[~real] == 0).all()  # positions after EOS: no compute, masked by TRL's loss
    assert len(ga) == len(gb) > 0
    num = sum(((x - y) ** 2).sum() for x, y in zip(ga, gb)).sqrt()
    den = sum((x ** 2).sum() for x in ga).sqrt()
    assert float(num / den) < 1e-4


def test_group_rows_needs_left_padding():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]])
    assert faststep.group_rows(ids, mask) == [([0, 1], 2), ([2], 3)]
    with pytest.raises(ValueError, match="left-padded"):
        faststep.group_rows(ids, torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]]))


def test_applies_only_to_the_hf_backend_on_cpu():
    cfg = config.preset("smoke")
    assert faststep.applies(cfg, "hf")
    assert not faststep.applies(cfg, "unsloth")
    assert not faststep.applies(cfg.override(fast_step="off"), "hf")
    assert not faststep.applies(cfg.override(vllm_mode="server"), "hf")
    with pytest.raises(config.ConfigError, match="fast_step"):
        config.validate(cfg.override(fast_step="fast"))


def test_trainer_logs_the_generator_gap_and_stops_on_a_wrong_generator(tmp_path, monkeypatch):
    cfg = config.preset("smoke", max_steps=1, save_steps=10**6)
    model, tok = training.load_model(cfg, "hf")
    ds = data.grpo_dataset(tasks.train_rows("arith", 2))
    from trl import GRPOTrainer

    from helpers import rewards

    def make():
        args = training.grpo_args(cfg, tmp_path, "hf")
        args.save_strategy = "no"
        return faststep.trainer_class(GRPOTrainer)(
            model=model, reward_funcs=list(rewards.rule_reward_funcs().values()), args=args,
            processing_class=tok, train_dataset=ds)

    fastgen.uninstall(model)
    trainer = make()
    assert fastgen.installed(model) is not None  # the trainer installs it when the model came without
    trainer.train()
    gaps = [h["generator_gap"] for h in trainer.state.log_history if "generator_gap" in h]
    assert gaps and max(gaps) < faststep.GAP_TOLERANCE["fp32"]
    assert fastgen.installed(model).calls["fast"] >= 1
    monkeypatch.setattr(faststep, "generator_gap", lambda *a: 1.0)  # a generator that samples another policy
    with pytest.raises(RuntimeError, match="not sampling from the policy being trained"):
        make().train()
    fastgen.uninstall(model)


def test_self_check_proves_the_generator_follows_the_adapter(lora_model, monkeypatch):
    from helpers import selfcheck

    model, tok, enc = lora_model
    assert selfcheck.check_fast_generator(model, tok) == {}  # not installed: nothing to check
    fastgen.install(model)
    try:
        out = selfcheck.check_fast_generator(model, tok)
        assert out["generator_kl"] < 1e-6 and out["generator_follows_adapter"] > 1e-3
        # a decoder that kept yesterday's weights: refresh() reads nothing new after the first call
        decoder = fastgen.installed(model).decoder
        decoder.refresh()
        monkeypatch.setattr(decoder, "refresh", lambda: None)
        with pytest.raises(selfcheck.SelfCheckError, match="fast generator"):
            selfcheck.check_fast_generator(model, tok)
    finally:
        fastgen.uninstall(model)
