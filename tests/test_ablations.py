"""The ablation runner without the real model: variant validation, grid presets, skip/resume of
`run_grid` (the per-variant training function monkeypatched), aggregation and figures from fake run
files, and the SFT term, LoRA reset and dynamics probe on a tiny random Llama with a tiny BPE tokenizer."""
import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from helpers import ablation_plots, ablations, config, logprob, runtime, training
from helpers.config import RULE_REWARDS, ConfigError


# ---- tiny model (a few seconds, no download) ---------------------------------------------
@pytest.fixture(scope="module")
def tiny_tok():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>",
              "Respond in the following format: system user assistant reasoning answer",
              "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May."] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>", model_input_names=["input_ids", "attention_mask"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def tiny_model(tok, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(cfg), lora)


# ---- variant validation ------------------------------------------------------------------
@pytest.fixture
def base():
    return ablations.base_config("smoke")


@pytest.mark.parametrize("variants, match", [
    ([{"name": "a", "transform": "softmax"}], r"Variant 'a': unknown transform 'softmax'.*Choose one of"),
    ([{"name": "a", "learning_rat": 1e-5}], r"unknown key\(s\) \['learning_rat'\] \(did you mean 'learning_rate'\?\)"),
    ([{"name": "a"}, {"name": "b"}, {"name": "a", "transform": "sum"}], r"'a' appears twice \(variants #0 and #2\)"),
    ([{"transform": "sum"}], r"name None is missing or invalid"),
    ([{"name": "a/b"}], r"name 'a/b' is missing or invalid"),
    ([{"name": "a", "scorer": "judge"}], r"unknown scorer 'judge'"),
    ([{"name": "a", "model_name": "Qwen/Qwen2.5-0.5B-Instruct"}], r"sets \['model_name'\].*base config"),
    ([{"name": "a", "reward_weights": {"x": 1.0}}], r"sets reward_weights directly"),
    ([{"name": "a", "sft_weight": -1.0}], r"sft_weight=-1.0 must be 0"),
    ([{"name": "a", "format_rewards": "yes"}], r"format_rewards='yes' must be True or False"),
    ([{"name": "a", "num_generations": 3}], r"Variant 'a': The generation batch .* not divisible"),
    ([], r"No variants given"),
])
def test_bad_variants_fail_before_any_model_loads(base, monkeypatch, tmp_path, variants, match):
    monkeypatch.setenv(runtime.RUNS_ENV, str(tmp_path))

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(training, "load_model", no_model)
    monkeypatch.setattr(ablations.runner, "_run_variant", no_model)
    with pytest.raises(ConfigError, match=match):
        ablations.run_grid(base, variants, backend="hf", load_model=no_model)
    assert not list(tmp_path.iterdir()), "nothing may be written for an invalid grid"


def test_variant_config_sets_run_name_weights_and_fields(base):
    cfg = ablations.variant_config(base, {"name": "m", "transform": "gmean_prob", "logprob_weight": 3.0,
                                          "format_rewards": False, "scale_rewards": False, "loss_type": "bnpo"})
    assert cfg.run_name == "03_ablations/m"
    assert not cfg.scale_rewards and cfg.loss_type == "bnpo"
    assert cfg.reward_weights["logprob_gmean_prob_reward"] == 3.0
    assert all(cfg.reward_weights[r] == 0.0 for r in RULE_REWARDS)  # format off, correctness logged only
    on = ablations.variant_config(base, {"name": "m2"}).reward_weights
    assert on == {**dict.fromkeys(RULE_REWARDS, 1.0), "correctness_reward": 0.0, "logprob_mean_reward": 1.0}


# ---- grid presets -----------------------------------------------------------------------
def test_grid_presets_are_valid_and_sized():
    assert len(ablations.GRIDS["smoke"]) == 2
    assert 3 <= len(ablations.GRIDS["cpu"]) <= 6
    full = {v["name"] for v in ablations.GRIDS["a100"]}
    for name, variants in ablations.GRIDS.items():
        normalized = ablations.validate_variants(variants, ablations.base_config(name), gpu_available=True)
        assert len({v["name"] for v in normalized}) == len(variants)
        if name in ("cpu", "t4"):
            assert {v["name"] for v in variants} <= full, f"{name} should be a subset of the full grid"


def test_cpu_grid_runs_on_the_cpu_learning_budget():
    from helpers import config

    grid, cpu = ablations.base_config("cpu"), config.preset("cpu")
    for name in ("learning_rate", "beta"):
        assert getattr(grid, name) == getattr(cpu, name), name
    for name in ("task", "train_levels", "num_generations", "max_completion_length", "precision"):
        assert getattr(grid, name) == getattr(cpu, name), name  # the task and budget of notebooks 01/02
    assert grid.max_steps <= cpu.max_steps and grid.save_steps < grid.max_steps  # fewer steps: 3 variants in 30 min


def test_full_grid_covers_the_issue():
    vs = [ablations.normalized_variant(v) for v in ablations.GRIDS["a100"]]
    assert {v["transform"] for v in vs} >= {"sum", "mean", "prob", "gmean_prob", "debiased", "clip"}
    assert {v["scorer"] for v in vs} == {"policy", "reference"}
    assert {v.get("loss_type", "grpo") for v in vs} == {"grpo", "bnpo", "dr_grpo"}
    assert {(v["transform"], v.get("scale_rewards", True)) for v in vs} >= {
        ("sum", True), ("mean", True), ("sum", False), ("mean", False)}
    assert any(v["sft_weight"] > 0 for v in vs)
    assert any(v["logprob_weight"] == 3.0 and v["transform"] == "gmean_prob" for v in vs)


# ---- skip and resume of the runner ----------------------------------------------------------
def write_finished(rd, steps=2):
    """The files training.is_finished looks for, and a metrics.csv (10 s between steps)."""
    (rd / "final_lora").mkdir(parents=True, exist_ok=True)
    (rd / "final_lora" / "adapter_model.safetensors").write_bytes(b"")
    (rd / "train_summary.json").write_text(json.dumps({"steps": steps}))
    pd.DataFrame({"step": range(1, steps + 1), "time": [100.0 + 10 * s for s in range(steps)],
                  "reward": [0.1] * steps, "reward_std": [0.2] * steps, "frac_reward_zero_std": [0.5] * steps,
                  "kl": [0.01] * steps, "completions/mean_length": [20.0] * steps}
                 ).to_csv(rd / "metrics.csv", index=False)


def write_results(rd, name, strict=0.5):
    (rd / "results.json").write_text(json.dumps({
        "variant": ablations.normalized_variant({"name": name}), "train": {"steps": 2},
        "eval": {"strict_accuracy": strict, "lenient_accuracy": strict + 0.1, "format_rate": 1.0,
                 "gold_ppl_median": 3.0, "mean_length_tokens": 30.0}}))


def test_run_grid_skips_finished_and_resumes_interrupted(base, monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.RUNS_ENV, str(tmp_path))
    grid = tmp_path / "03_ablations"
    done, interrupted, evaluating = grid / "done", grid / "interrupted", grid / "evaluating"
    write_finished(done)
    write_results(done, "done", strict=0.9)
    (interrupted / "checkpoints" / "checkpoint-1").mkdir(parents=True)  # killed mid-training
    (interrupted / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    write_finished(evaluating)  # killed during the "after" eval
    calls = []

    def fake_run_variant(cfg, variant, *, backend, load_model, grid_dir, dynamics_pool_size, disk=None):
        rd = runtime.run_dir(cfg.project, cfg.run_name)
        assert rd == grid_dir / variant["name"] and backend == "hf"
        calls.append(variant["name"])
        write_finished(rd)
        write_results(rd, variant["name"])

    monkeypatch.setattr(ablations.runner, "_run_variant", fake_run_variant)
    variants = [{"name": n} for n in ("done", "interrupted", "evaluating", "fresh")]
    table = ablations.run_grid(base, variants, backend="hf", load_model=lambda cfg: None)
    assert calls == ["interrupted", "evaluating", "fresh"]
    assert list(table["variant"]) == ["done", "interrupted", "evaluating", "fresh"]
    assert table.set_index("variant").loc["done", "strict_accuracy"] == 0.9  # read from disk, not re-run
    assert (grid / "ablation_results.csv").exists() and (grid / "grid.json").exists()

    calls.clear()
    ablations.run_grid(base, variants, backend="hf", load_model=lambda cfg: None)
    assert calls == []


def test_variants_that_coincide_on_unsloth_are_skipped_and_named(base, monkeypatch, tmp_path):
    """Unsloth computes bnpo per sequence (= grpo) and forces scale_rewards off for dr_grpo (unsloth/models/rl.py)."""
    full = ablations.GRIDS["a100"]
    assert ablations.coinciding_variants(full, base, "hf") == {}
    assert ablations.coinciding_variants(full, base, "unsloth") == {"bnpo": "mean"}
    dr = ablations.effective_variant({"name": "dr_grpo", "loss_type": "dr_grpo"}, base, "unsloth")
    assert dr["scale_rewards"] is False and dr["loss_type"] == "dr_grpo"
    monkeypatch.setenv(runtime.RUNS_ENV, str(tmp_path))
    calls = []

    def fake_run_variant(cfg, variant, *, backend, load_model, grid_dir, dynamics_pool_size, disk=None):
        calls.append(variant["name"])
        rd = runtime.run_dir(cfg.project, cfg.run_name)
        write_finished(rd)
        write_results(rd, variant["name"])

    monkeypatch.setattr(ablations.runner, "_run_variant", fake_run_variant)
    table = ablations.run_grid(base, [{"name": "mean"}, {"name": "bnpo", "loss_type": "bnpo"}], backend="unsloth",
                               load_model=lambda cfg: None)
    assert calls == ["mean"]
    row = table.set_index("variant").loc["bnpo"]
    assert row["same_as"] == "mean" and math.isnan(row["strict_accuracy"])


def test_results_table_shows_the_trainers_effective_arguments(tmp_path):
    write_finished(tmp_path / "dr_grpo", steps=4)
    write_results(tmp_path / "dr_grpo", "dr_grpo")
    (tmp_path / "dr_grpo" / "config.json").write_text(json.dumps({"scale_rewards": True, "loss_type": "dr_grpo"}))
    (tmp_path / "dr_grpo" / "effective_args.json").write_text(json.dumps(
        {"scale_rewards": False, "loss_type": "dr_grpo", "loss_computed_as": "dr_grpo", "backend": "unsloth"}))
    row = ablations.aggregate(tmp_path, ["dr_grpo"]).set_index("variant").loc["dr_grpo"]
    assert row["scale_rewards"] == False and row["loss_type"] == "dr_grpo"  # noqa: E712 - numpy bool


def test_effective_args_read_back_from_the_trainer_arguments(tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), loss_type="bnpo", scale_rewards=True, report_to="none")
    hf, uns = training.effective_args(args, "hf"), training.effective_args(args, "unsloth")
    assert hf["loss_computed_as"] == "bnpo" and uns["loss_computed_as"] == "grpo"
    assert hf["scale_rewards"] is True and hf["beta"] == args.beta and hf["optim"] == "adamw_torch"


def test_finished_runs_drop_their_checkpoints_unfinished_keep_them(tmp_path):
    done, running = tmp_path / "done", tmp_path / "running"
    for rd in (done, running):
        (rd / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        (rd / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"x" * 1000)
    write_finished(done)
    assert training.prune_checkpoints(done) == 1000 and not (done / "checkpoints").exists()
    assert (done / "final_lora" / "adapter_model.safetensors").exists()
    assert training.prune_checkpoints(running) == 0 and (running / "checkpoints" / "checkpoint-5").exists()


def test_disk_estimate_counts_lora_parameters(tiny_tok):
    model = tiny_model(tiny_tok)
    cfg = config.preset("smoke")
    est = training.lora_disk_estimate(model, cfg, "unsloth")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est["lora_parameters"] == n > 0
    assert est["adapter_bytes"] == 4 * n and est["checkpoint_bytes"] == 6 * n
    assert est["peak_run_bytes"] == 4 * n + 6 * n * cfg.save_total_limit


# ---- aggregation and figures ------------------------------------------------------------------
def test_aggregate_builds_one_row_per_variant(tmp_path):
    for name, strict in (("a", 0.25), ("b", 0.75)):
        write_finished(tmp_path / name, steps=4)
        write_results(tmp_path / name, name, strict=strict)
    m = pd.read_csv(tmp_path / "b" / "metrics.csv")
    m["kl"] = [0.0, 0.0, 0.0, 0.4]  # last quarter of 4 steps = the last row
    m["reward_std"] = [0.0, 0.2, 0.4, 0.6]
    m.to_csv(tmp_path / "b" / "metrics.csv", index=False)
    (tmp_path / "b" / "config.json").write_text(json.dumps({"scale_rewards": False, "loss_type": "bnpo"}))
    pd.DataFrame({"strict_correct": [True, False], "lenient_correct": [True, True], "format_ok": [True, False],
                  "length_tokens": [10, 20], "gold_ppl": [2.0, 4.0]}).to_csv(tmp_path / "eval_samples_start.csv",
                                                                            index=False)
    table = ablations.aggregate(tmp_path, ["b", "a", "missing"])
    assert list(table["variant"]) == ["start", "b", "a"]
    b = table.set_index("variant").loc["b"]
    assert b["strict_accuracy"] == 0.75 and b["gold_ppl_median"] == 3.0 and b["steps"] == 4
    assert b["kl"] == pytest.approx(0.4) and b["reward_std"] == pytest.approx(0.3)
    assert b["frac_reward_zero_std"] == 0.5 and b["train_completion_length"] == 20.0
    assert b["wall_time_s"] == pytest.approx(40.0)  # median step interval 10 s × 4 steps
    assert not b["scale_rewards"] and b["loss_type"] == "bnpo" and b["transform"] == "mean"
    start = table.set_index("variant").loc["start"]
    assert start["strict_accuracy"] == 0.5 and start["gold_ppl_median"] == 3.0


def test_report_draws_every_figure(tmp_path):
    for name in ("a", "b"):
        write_finished(tmp_path / name, steps=3)
        write_results(tmp_path / name, name)
        pd.DataFrame({"step": [0, 2], "own/loglik": [-5.0, -4.0], "own/ppl": [3.0, 2.5],
                      "own/entropy": [1.0, 0.9]}).to_csv(tmp_path / name / "dynamics.csv", index=False)
    table = ablations.aggregate(tmp_path)
    saved = ablation_plots.report(tmp_path, table, "tiny · 3 steps · test", figures_dir=tmp_path / "figs")
    assert set(saved) == {"curves", "dynamics", "bars"}  # no evaluations written: no paired changes to draw
    for path in saved.values():
        assert path.stat().st_size > 5000 and (tmp_path / "figs" / path.name).exists()
    _write_eval(tmp_path / "eval_samples_start.csv", [0, 1, 0, 0], [-3.0, -2.0, -4.0, -5.0], [40] * 4)
    for name, (right, lp) in {"a": ([1, 1, 0, 0], -2.0), "b": ([0, 1, 0, 0], -4.0), "a_s43": ([1, 1, 1, 0], -2.5)}.items():
        _write_eval(tmp_path / name / "eval_samples_after.csv", right, [lp] * 4, [50] * 4)
    table = pd.concat([table, pd.DataFrame([{"variant": "a_s43"}])], ignore_index=True)
    saved = ablation_plots.report(tmp_path, table, "tiny · 3 steps · test")
    assert saved["changes"].stat().st_size > 5000  # minus the start (no control "mean_only" in this grid)
    tables = [ablations.pooled_changes(tmp_path, ["a", "b", "a_s43"]),
              ablations.pooled_changes(tmp_path, ["a", "b", "a_s43"], against="a")]
    assert set(tables[0]["variant"]) == {"a", "b"} and tables[0].query("variant == 'a'")["seeds"].eq(2).all()
    fig = ablation_plots.change_panels(tables, "tiny")
    assert len(fig.axes) == 2 * 3  # two rows (minus start, minus a), a panel per metric the files hold
    with pytest.raises(ValueError, match="Nothing to draw"):
        ablation_plots.change_panels([tables[0].iloc[:0]], "tiny")


# ---- SFT term ------------------------------------------------------------------------------
PROMPT = "<|im_start|>user\nNatalia sold 48 clips. How many?<|im_end|>\n<|im_start|>assistant\n"


def test_sft_batch_targets_exactly_the_gold_answer(tiny_tok):
    completions = ["<reasoning>\n48 / 2 = 24\n</reasoning>\n<answer>\n99\n</answer>", "no tags at all"]
    batch = ablations.sft_batch(tiny_tok, [PROMPT, PROMPT], completions, ["72", "72"])
    for row, completion in enumerate(completions):
        ids = batch["sft_input_ids"][row][batch["sft_attention_mask"][row].bool()].tolist()
        target = batch["sft_input_ids"][row][batch["sft_target_mask"][row].bool()].tolist()
        assert tiny_tok.decode(target) == "72\n</answer>"
        context, gold_target, _ = logprob.gold_context_target(PROMPT, completion, "72")
        assert (ids, len(ids) - len(target)) == tuple(logprob.encode_pair(tiny_tok, context, gold_target))
        assert "99" not in tiny_tok.decode(ids)  # the model's own answer is replaced by the gold one
    assert batch["sft_attention_mask"][1].sum() < batch["sft_attention_mask"].shape[1]  # right padding


def test_answer_nll_matches_full_logits_and_has_a_gradient(tiny_tok):
    model = tiny_model(tiny_tok)
    batch = ablations.sft_batch(tiny_tok, [PROMPT] * 2, ["<reasoning>\n24\n</reasoning>\n<answer>\n1", "x"],
                                ["72", "72"])
    nll = ablations.answer_nll(model, *(batch[k] for k in ablations.SFT_KEYS))
    logits = model(input_ids=batch["sft_input_ids"], attention_mask=batch["sft_attention_mask"]).logits
    lps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["sft_input_ids"][:, 1:, None])[..., 0]
    mask = batch["sft_target_mask"][:, 1:].bool()
    assert nll.item() == pytest.approx(-lps[mask].mean().item(), abs=1e-5)
    nll.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert lora_grads and any(g.abs().sum() > 0 for g in lora_grads)


def test_sft_term_trainer_adds_the_weighted_nll_with_gradient(tiny_tok, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from helpers import data

    model = tiny_model(tiny_tok)
    rows = data.load_gsm8k_rows("train", "bundled", n=2)
    ds = data.grpo_dataset(rows)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
                      max_prompt_length=256, max_completion_length=8, logging_steps=1, report_to="none",
                      save_strategy="no", use_vllm=False, dataloader_num_workers=0, remove_unused_columns=False)
    lp = logprob.logprob_reward(model, tiny_tok, transform="mean")
    trainer = ablations.sft_term_trainer_class(0.5)(model=model, reward_funcs=[lp], args=args, train_dataset=ds,
                                                    processing_class=tiny_tok)
    model.train()
    inputs = trainer._generate_and_score_completions([ds[0], ds[0], ds[1], ds[1]])
    assert inputs["sft_input_ids"].shape[0] == 4
    for row, gold in enumerate([ds[0]["answer"]] * 2 + [ds[1]["answer"]] * 2):
        target = inputs["sft_input_ids"][row][inputs["sft_target_mask"][row].bool()]
        assert tiny_tok.decode(target) == f"{gold}\n</answer>"
    total = trainer.compute_loss(model, inputs)
    grpo = GRPOTrainer.compute_loss(trainer, model, inputs)
    nll = ablations.answer_nll(model, *(inputs[k] for k in ablations.SFT_KEYS))
    assert total.item() == pytest.approx(grpo.item() + 0.5 * nll.item(), abs=1e-5)
    assert trainer._metrics["train"]["sft_term"] == [pytest.approx(nll.item(), abs=1e-5)]
    (total - grpo).backward()  # the part of the loss TRL's reward path has no gradient for
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    trainer.train()  # and a real optimizer step runs, logging the term
    assert "sft_term" in trainer.state.log_history[0]


# ---- fresh LoRA per variant and the dynamics probe ------------------------------------------------
def test_reset_lora_restores_the_base_model(tiny_tok):
    model = tiny_model(tiny_tok)
    ids = torch.tensor([tiny_tok("<answer>\n7\n</answer>")["input_ids"]])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)
        trained = model(input_ids=ids).logits
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits
    assert not torch.allclose(trained, base_logits)
    assert ablations.reset_lora(model, seed=1) == 4  # 2 layers × (q_proj, v_proj)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, base_logits, atol=1e-6)


def test_dynamics_stats_agree_with_the_scorer_and_are_logged_per_save(tiny_tok, tmp_path):
    model = tiny_model(tiny_tok)
    samples = pd.DataFrame({"question": ["Natalia sold 48 clips. How many?"] * 3, "gold": ["72", "5", "6"],
                            "completion": ["<reasoning>\n48+24\n</reasoning>\n<answer>\n72\n</answer>", "7", ""]})
    rows = [{"question": "How many?", "answer": "48 / 2 = <<48/2=24>>24\n#### 24"}]
    pool = ablations.dynamics_pool(tiny_tok, samples, rows, n=2)
    assert [p["kind"] for p in pool] == ["own", "own", "ref"]
    assert pool[2]["target"].endswith("<answer>\n24\n</answer>") and "<<" not in pool[2]["target"]
    stats = ablations.dynamics_stats(model, tiny_tok, pool, batch_size=2)
    lps = logprob.score_targets(model, tiny_tok, [p["context"] for p in pool], [p["target"] for p in pool])
    assert stats["own/loglik"] == pytest.approx((sum(lps[0]) + sum(lps[1])) / 2, abs=1e-4)
    assert stats["ref/ppl"] == pytest.approx(math.exp(-sum(lps[2]) / len(lps[2])), rel=1e-4)
    assert 0 < stats["own/entropy"] <= math.log(len(tiny_tok)) + 1e-6

    cb = ablations.DynamicsCallback(tmp_path / "dynamics.csv", tiny_tok, pool)
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=0), None, model=model)
    cb.on_save(None, SimpleNamespace(is_world_process_zero=True, global_step=2), None, model=model)
    cb.on_save(None, SimpleNamespace(is_world_process_zero=False, global_step=4), None, model=model)
    df = pd.read_csv(tmp_path / "dynamics.csv")
    assert list(df["step"]) == [0, 2] and {"own/ppl", "ref/entropy"} <= set(df.columns)


# ---- the whole runner on the tiny model ----------------------------------------------------------
def test_run_grid_end_to_end_on_a_tiny_model(tiny_tok, monkeypatch, tmp_path):
    """Shared cold start, start eval, GRPO (one variant with the SFT term), dynamics, after eval, results,
    aggregation: every file a real grid writes, in seconds. A re-run loads nothing."""
    monkeypatch.setenv(runtime.RUNS_ENV, str(tmp_path))
    base = ablations.base_config("smoke", max_steps=1, save_steps=1, sft_steps=1, eval_size=2,
                                 eval_max_new_tokens=4, max_completion_length=8, train_size=4)
    loads = []

    def load(cfg):
        loads.append(cfg.run_name)
        return tiny_model(tiny_tok, seed=cfg.seed), tiny_tok

    table = ablations.run_grid(base, ablations.GRIDS["smoke"], backend="hf", load_model=load, dynamics_pool_size=2)
    grid = tmp_path / "03_ablations"
    assert loads == ["03_ablations/mean", "03_ablations/sum_only_noscale_sft"]
    assert list(table["variant"]) == ["start", "mean", "sum_only_noscale_sft"]
    assert (grid / "sft_lora" / "adapter_model.safetensors").exists() and (grid / "eval_samples_start.csv").exists()
    for name in ("mean", "sum_only_noscale_sft"):
        rd = grid / name
        assert training.is_finished(rd) and (rd / "results.json").exists()
        assert list(pd.read_csv(rd / "dynamics.csv")["step"]) == [0, 1]
    sft = {n: json.loads((grid / n / "results.json").read_text())["sft"]["sft"]
           for n in ("mean", "sum_only_noscale_sft")}
    assert sft == {"mean": "trained", "sum_only_noscale_sft": "loaded"}  # one cold start for the grid
    assert "sft_term" in pd.read_csv(grid / "sum_only_noscale_sft" / "metrics.csv")
    assert table["steps"].tolist() == [0, 1, 1]
    ablations.run_grid(base, ablations.GRIDS["smoke"], backend="hf", load_model=load)
    assert len(loads) == 2


# ---- paired held-out changes, seeds ------------------------------------------------------------
def _write_eval(path, correct, gold_lp, length, questions=("q1", "q2", "q3", "q4")):
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"question": list(questions), "strict_correct": correct, "gold_answer_logprob": gold_lp,
                  "length_tokens": length}).to_csv(path, index=False)


def test_held_out_changes_pair_each_variant_with_the_start_and_the_control(tmp_path):
    _write_eval(tmp_path / "eval_samples_start.csv", [0, 0, 1, 0], [-5.0, -4.0, -1.0, -6.0], [50, 50, 50, 50])
    _write_eval(tmp_path / "mean_only" / "eval_samples_after.csv", [1, 1, 1, 1], [-1.0, -1.0, -1.0, -1.0], [30] * 4)
    _write_eval(tmp_path / "noscale" / "eval_samples_after.csv", [0, 0, 1, 0], [-5.0, -4.0, -1.0, -6.0], [50] * 4)
    t = ablations.held_out_changes(tmp_path, ["mean_only", "noscale", "not_run"]).set_index(["variant", "metric"])
    assert t.loc[("mean_only", "strict_accuracy"), "delta"] == pytest.approx(0.75)
    assert t.loc[("mean_only", "gold_answer_logprob"), "verdict"] == "up"
    assert t.loc[("mean_only", "completion_tokens"), "verdict"] == "down"
    assert t.loc[("noscale", "strict_accuracy"), "delta"] == 0.0 and t.loc[("noscale", "strict_accuracy"), "verdict"] == "within noise"
    assert "not_run" not in t.index.get_level_values(0)  # no evaluation yet: left out, not an error
    c = ablations.held_out_changes(tmp_path, ["mean_only", "noscale"], against="mean_only")
    assert set(c["variant"]) == {"noscale"} and (c["vs"] == "mean_only").all()
    assert c.set_index("metric").loc["strict_accuracy", "delta"] == pytest.approx(-0.75)
    with pytest.raises(FileNotFoundError, match="run the grid"):
        ablations.held_out_changes(tmp_path, ["noscale"], against="missing")


def test_seeds_replicate_variants_and_pool_per_question(tmp_path):
    grid = [{"name": "mean_only", "format_rewards": False}, {"name": "noscale", "scale_rewards": False}]
    runs = ablations.replicate(grid, [43])
    assert [r["name"] for r in runs] == ["mean_only", "noscale", "mean_only_s43", "noscale_s43"]
    assert runs[2] == {"name": "mean_only_s43", "format_rewards": False, "seed": 43} and "seed" not in runs[0]
    assert ablations.replicate(grid, []) == grid
    with pytest.raises(ValueError, match="non-negative integers"):
        ablations.replicate(grid, ["1"])
    ablations.validate_variants(runs, ablations.base_config("smoke"))  # a seed is a per-variant field
    assert ablations.replicate_groups(["mean_only", "noscale", "mean_only_s43", "other_s2"]) == {
        "mean_only": ["mean_only", "mean_only_s43"], "noscale": ["noscale"], "other_s2": ["other_s2"]}
    _write_eval(tmp_path / "eval_samples_start.csv", [0, 0, 0, 0], [-4.0] * 4, [50] * 4)
    _write_eval(tmp_path / "mean_only" / "eval_samples_after.csv", [1, 1, 0, 0], [-2.0] * 4, [40] * 4)
    _write_eval(tmp_path / "mean_only_s43" / "eval_samples_after.csv", [1, 0, 0, 0], [-3.0] * 4, [60] * 4)
    _write_eval(tmp_path / "noscale" / "eval_samples_after.csv", [0, 0, 0, 0], [-4.0] * 4, [50] * 4)
    t = ablations.pooled_changes(tmp_path, ["mean_only", "mean_only_s43", "noscale"]).set_index(["variant", "metric"])
    assert t.loc[("mean_only", "strict_accuracy"), "delta"] == pytest.approx(3 / 8)  # (2 + 1) right of 8 answers
    assert t.loc[("mean_only", "gold_answer_logprob"), "delta"] == pytest.approx(1.5)
    assert t.loc[("mean_only", "completion_tokens"), "delta"] == pytest.approx(0.0)  # the seeds cancel: -10, +10
    assert t.loc[("mean_only", "strict_accuracy"), "seeds"] == 2 and t.loc[("noscale", "strict_accuracy"), "seeds"] == 1
    c = ablations.pooled_changes(tmp_path, ["mean_only", "mean_only_s43", "noscale"], against="mean_only")
    assert set(c["variant"]) == {"noscale"} and (c["seeds_against"] == 2).all()
    assert c.set_index("metric").loc["gold_answer_logprob", "delta"] == pytest.approx(-1.5)
    _write_eval(tmp_path / "noscale_s43" / "eval_samples_after.csv", [0] * 4, [-4.0] * 4, [50] * 4,
                questions=("q4", "q3", "q2", "q1"))
    with pytest.raises(ValueError, match="different questions"):
        ablations.pooled_changes(tmp_path, ["noscale", "noscale_s43"])
