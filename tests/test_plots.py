"""The shared palette and the figures' honesty rules: one colour per reward/run kind, no empty panels, readable
titles, shares on their whole axis, intervals drawn."""
import pandas as pd

from helpers import plots


def test_one_colour_per_reward_and_run_kind():
    assert plots.color_for("01 rule") == plots.color_for("rule rewards") == plots.PALETTE["rule"]
    assert plots.color_for("02 logprob") == plots.color_for("02 logprob reward") == plots.PALETTE["logprob"]
    assert plots.color_for("base (before)") == plots.PALETTE["base"] and plots.color_for("sft") == plots.PALETTE["sft"]
    assert plots.color_for("02 logprob") != plots.color_for("01 rule")
    assert plots.color_for("variant a", 0) != plots.color_for("variant b", 1)  # fallbacks differ by position
    assert len(set(plots.PALETTE.values())) == len(plots.PALETTE)


def test_training_curves_leave_out_unlogged_panels_and_use_readable_titles(tmp_path):
    for name, shift in (("01 rule", 0.0), ("02 logprob", 0.1)):
        pd.DataFrame({"step": [1, 2, 3], "reward": [0.1 + shift, 0.2, 0.3], "completions/mean_length": [40, 42, 41],
                      "kl": [None, None, None]}).to_csv(tmp_path / f"{name}.csv", index=False)
    fig = plots.training_curves({n: tmp_path / f"{n}.csv" for n in ("01 rule", "02 logprob")}, "label",
                                columns=["reward", "completions/mean_length", "kl"])
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == ["total reward (weighted sum)", "completion length"]
    assert all(ax.get_ylabel() for ax in axes)
    lines = axes[0].get_lines()
    assert [ln.get_color() for ln in lines] == [plots.PALETTE["rule"], plots.PALETTE["logprob"]]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()  # identical curves stay visible
    assert "not logged: kl" in fig._suptitle.get_text()


def test_probe_curves_draw_the_interval_on_a_full_axis():
    hist = pd.DataFrame({"step": [0, 25, 50], "strict_accuracy": [0.17, 0.18, 0.19]})
    changes = pd.DataFrame({"metric": ["strict_accuracy"], "delta": [0.02], "ci95_lo": [-0.01], "ci95_hi": [0.05]})
    fig = plots.probe_curves({"02 logprob": hist}, "label", changes={"02 logprob": changes},
                             panels={"strict_accuracy": "strict accuracy"})
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.containers, "the paired interval is drawn as an error bar, not only written in the legend"


def test_wilson_interval():
    lo, hi = plots.wilson(0.0, 30)
    assert lo == 0.0 and 0.1 < hi < 0.13
    lo, hi = plots.wilson(0.2, 30)
    assert lo < 0.2 < hi and hi - lo > 0.25
