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
