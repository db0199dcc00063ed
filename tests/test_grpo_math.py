"""The figure and table notebook 01's "What GRPO computes" section shows."""
from helpers import plots
from helpers.grpo_math import advantage_table


def test_grpo_steps_figure_draws_four_steps_and_saves(tmp_path):
    out = tmp_path / "steps.png"
    fig = plots.grpo_steps_figure(save_to=[out])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert [t for t in texts if t[:1].isdigit()] == ["1 generate", "2 reward", "3 advantage", "4 loss + KL"]
    assert out.exists() and out.stat().st_size > 1000


def test_advantage_table_columns():
    table, frac = advantage_table([[1.0, 0.0], [0.0, 1.0]], ["a", "b"], [1.0, 2.0])
    assert list(table.columns) == ["group", "a", "b", "weighted sum", "group mean", "group std", "advantage"]
    assert frac == 0.0 and table["advantage"].iloc[1] > 0


def test_describe_grpo_config_comments_every_argument_grpo_args_sets(tmp_path):
    import inspect

    from helpers import config, training
    from helpers.grpo_math import GRPO_ARG_COMMENTS, describe_grpo_config

    args = training.grpo_args(config.preset("smoke"), tmp_path, "hf")
    text = describe_grpo_config(args)
    assert "lr_scheduler_type" in text and "cosine" in text and "num_iterations" in text
    src = inspect.getsource(training.grpo_args)
    set_here = [k for k in GRPO_ARG_COMMENTS if f"{k}=" in src]
    skipped = {"output_dir", "save_strategy", "dataloader_num_workers", "remove_unused_columns", "log_completions",
               "vllm_mode", "vllm_server_base_url"}
    import re
    kwargs = set(re.findall(r"\b([a-z_0-9]+)=", src)) - skipped - {"precision", "backend"}
    missing = {k for k in kwargs if hasattr(args, k)} - set(GRPO_ARG_COMMENTS)
    assert not missing, f"grpo_args sets {missing} without a comment in GRPO_ARG_COMMENTS"
    assert set_here
