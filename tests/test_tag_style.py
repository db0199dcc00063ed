"""tag_style: the <think>…</think> format (DeepSeek-R1, grpo-reasoncheck) beside <reasoning>…</reasoning>.

Both directions: each style's own completions earn the format rewards, the other style's earn nothing from the
strict reward; what does not depend on the style (the answer block, correctness, the logprob target) is equal.
"""
import json

import pytest

from helpers import config, data, evaluation, logprob, rewards, training

THINK = "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
REASON = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
MIXED = "<think>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
ROWS = [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}]


def test_styles_are_the_same_in_config_and_data():
    assert set(data.TAG_STYLES) == set(config.TAG_STYLE_NAMES)
    assert data.reasoning_tags("think") == ("<think>", "</think>")
    assert data.reasoning_tags() == (data.REASONING_OPEN, data.REASONING_CLOSE) == ("<reasoning>", "</reasoning>")


def test_unknown_style_is_a_config_error_before_anything_loads():
    with pytest.raises(config.ConfigError, match="tag_style"):
        config.validate(config.preset("smoke", tag_style="thinking"))
    with pytest.raises(config.ConfigError, match="tag_style"):
        rewards.rule_reward_funcs("Think")
    with pytest.raises(config.ConfigError, match="tag_style"):
        data.format_solution(ROWS[0]["answer"], "xml")
    config.validate(config.preset("smoke", tag_style="think"))


@pytest.mark.parametrize("style, own, other", [("think", THINK, REASON), ("reasoning", REASON, THINK)])
def test_format_rewards_pay_the_runs_own_style_only(style, own, other):
    funcs = rewards.rule_reward_funcs(style)
    got = {name: f(prompts=None, completions=[own, other, MIXED], answer=["7"] * 3)[0:3] for name, f in funcs.items()}
    assert got["strict_format_reward"] == [0.5, 0.0, 0.0]
    assert got["soft_format_reward"] == [0.5, 0.0, 0.0]
    assert got["tag_count_reward"] == [0.5, 0.25, 0.375]  # the other style: only the two answer tags count
    # The answer block is the same in every style: correctness and the integer check do not change.
    assert got["correctness_reward"] == [2.0, 2.0, 2.0]
    assert got["integer_answer_reward"] == [0.5, 0.5, 0.5]


def test_rule_reward_funcs_keep_names_and_the_default_is_the_module_functions():
    assert rewards.rule_reward_funcs() == rewards.RULE_REWARD_FUNCS
    think = rewards.rule_reward_funcs("think")
    assert list(think) == list(rewards.RULE_REWARD_FUNCS) == list(config.RULE_REWARDS)
    assert [f.__name__ for f in think.values()] == list(think)  # TRL logs rewards/<__name__>/mean
    assert think["correctness_reward"] is rewards.correctness_reward
    # TRL passes dataset columns as keyword arguments; a stray tag_style column cannot switch the style.
    assert think["strict_format_reward"](completions=[THINK], tag_style=["reasoning"]) == [0.5]
    # Bad input stays a defined reward.
    assert think["strict_format_reward"](completions=[None, 3, [], "<think>"]) == [0.0] * 4


@pytest.mark.parametrize("style", ["think", "reasoning"])
def test_prompt_cold_start_and_dataset_follow_the_style(style):
    open_, close = data.reasoning_tags(style)
    prompt = data.make_prompt("q", tag_style=style)
    assert open_ in prompt[0]["content"] and close in prompt[0]["content"]
    sol = data.format_solution(ROWS[0]["answer"], style)
    assert sol == f"{open_}\n3 + 4 = 7\n{close}\n<answer>\n7\n</answer>"
    assert rewards.rule_reward_funcs(style)["strict_format_reward"](completions=[sol]) == [0.5]
    sft = data.sft_dataset(ROWS, tag_style=style)[0]
    assert sft["completion"][0]["content"] == sol and open_ in sft["prompt"][0]["content"]
    assert open_ in data.grpo_dataset(ROWS, tag_style=style)[0]["prompt"][0]["content"]
    # An explicit system prompt still wins (the writing task passes its own).
    assert data.make_prompt("q", "custom", tag_style=style)[0]["content"] == "custom"


def test_the_default_prompt_is_unchanged():
    assert data.SYSTEM_PROMPT == "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
    assert data.make_prompt("q")[0]["content"] == data.SYSTEM_PROMPT


def test_logprob_target_is_the_same_in_both_styles():
    ctx_t, tgt_t, tagged_t = logprob.gold_context_target("P", THINK, "7")
    ctx_r, tgt_r, tagged_r = logprob.gold_context_target("P", REASON, "7")
    assert ctx_t == "P<think>\n3 + 4 = 7\n</think>\n<answer>\n" and ctx_r == "P<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n"
    assert tgt_t == tgt_r == "7\n</answer>" and tagged_t and tagged_r


def test_evaluation_scores_format_in_the_runs_style():
    think = evaluation.score_completions([THINK, REASON], ["7", "7"], tag_style="think")
    reason = evaluation.score_completions([THINK, REASON], ["7", "7"])
    assert list(think["format_ok"]) == [True, False] and list(reason["format_ok"]) == [False, True]
    assert list(think["strict_correct"]) == list(reason["strict_correct"]) == [True, True]


def test_changing_the_style_of_a_run_is_a_config_mismatch(tmp_path):
    cfg = config.preset("smoke")
    assert training.check_run_config(tmp_path, cfg) == "new"
    with pytest.raises(config.ConfigError, match="tag_style"):
        training.check_run_config(tmp_path, cfg.override(tag_style="think"))
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("tag_style")  # a run saved before tag_style existed was a <reasoning> run
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert training.check_run_config(tmp_path, cfg) == "same"


def test_the_ablation_grid_shares_the_style():
    from helpers import ablations

    assert "tag_style" in ablations.SHARED_FIELDS


@pytest.mark.slow
def test_think_style_trains_and_evaluates_on_smoke(tmp_path, monkeypatch):
    """The whole rule stage on smoke with tag_style="think": cold start on <think> solutions, GRPO prompts and
    format rewards in <think>, evaluation prompts in <think>; each step is observed, not assumed."""
    from helpers import pipeline

    monkeypatch.setenv("GRPO_RUNS_DIR", str(tmp_path))
    seen = {"sft": [], "eval_prompts": []}
    real_sft, real_generate = data.sft_dataset, evaluation.generate

    def spy_sft(rows, *a, **kw):
        ds = real_sft(rows, *a, **kw)
        seen["sft"] += [ex["completion"][0]["content"] for ex in ds]
        return ds

    def spy_generate(model, tokenizer, prompts, **kw):
        seen["eval_prompts"] += list(prompts)
        return real_generate(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(data, "sft_dataset", spy_sft)
    monkeypatch.setattr(evaluation, "generate", spy_generate)
    cfg = config.preset("smoke", run_name="think", tag_style="think", dataset_source="bundled")
    exp = pipeline.run_rule_stage(cfg, backend="hf")

    assert exp.result.status == "trained" and exp.result.steps == cfg.max_steps
    assert seen["sft"] and all(s.startswith("<think>\n") and "\n</think>\n<answer>\n" in s for s in seen["sft"])
    assert seen["eval_prompts"] and all("<think>" in p and "<reasoning>" not in p for p in seen["eval_prompts"])
    prompt = exp.train_dataset()[0]["prompt"][0]["content"]
    assert "<think>" in prompt and "<reasoning>" not in prompt
    import pandas as pd

    metrics = pd.read_csv(exp.result.metrics_csv)
    assert "rewards/strict_format_reward/mean" in metrics.columns
    table = pd.read_csv(exp.run_dir / "eval_table.csv")
    assert list(table["model"]) == ["before", "after"] and table["format_rate"].between(0, 1).all()
    assert json.loads((exp.run_dir / "config.json").read_text())["tag_style"] == "think"
