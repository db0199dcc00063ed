"""What cancels in GRPO's advantages and what does not (taught in notebook 03), on TRL's own formula.

TRL computes advantages inside `GRPOTrainer._generate_and_score_completions`, which also generates
and scores completions, so it cannot run without a model. `helpers.grpo_math.trl_advantages` (which
notebook 01 runs too) is a line-for-line copy of trl 0.18.2, trl/trainer/grpo_trainer.py, lines
1204-1216; `test_copy_matches_installed_trl` reads the installed source and fails if those lines
change, so the copy cannot drift silently.

Notation: a group is the G completions of one prompt. Their gold answer is the same text, so its
token count n is the same for the whole group (the target is tokenized jointly with a context that
always ends in "<answer>\\n", so the boundary does not move): sum = n × mean within a group.
"""
import inspect
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers.grpo_math import advantage_table, trl_advantages

EPS = 1e-4  # TRL 0.18.2's constant in advantages / (std + 1e-4)


TRL_LINES = (  # the lines of trl 0.18.2 that trl_advantages copies, verbatim
    "rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)",
    "mean_grouped_rewards = rewards.view(-1, self.num_generations).mean(dim=1)",
    "std_grouped_rewards = rewards.view(-1, self.num_generations).std(dim=1)",
    "mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(self.num_generations, dim=0)",
    "std_grouped_rewards = std_grouped_rewards.repeat_interleave(self.num_generations, dim=0)",
    "advantages = rewards - mean_grouped_rewards",
    "if self.scale_rewards:",
    "advantages = advantages / (std_grouped_rewards + 1e-4)",
)


def test_copy_matches_installed_trl():
    """Each key line is in the installed TRL method, and (with self.* made arguments) in our copy, in order."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    def stripped(fn):
        return [ln.strip() for ln in inspect.getsource(fn).splitlines() if ln.strip()]

    trl_lines, copy_lines = stripped(GRPOTrainer._generate_and_score_completions), stripped(trl_advantages)
    as_args = {"self.reward_weights.to(device)": "reward_weights", "self.": ""}
    positions = []
    for line in TRL_LINES:
        assert line in trl_lines, f"TRL's advantage code changed: {line!r} not found; update trl_advantages"
        ours = line
        for old, new in as_args.items():
            ours = ours.replace(old, new)
        assert ours in copy_lines, f"trl_advantages lacks {ours!r}"
        positions.append(copy_lines.index(ours))
    assert positions == sorted(positions)


def single(values, dtype=torch.float64):
    """rewards_per_func with one reward function, and its weight 1."""
    return torch.tensor(values, dtype=dtype).unsqueeze(1), torch.ones(1, dtype=dtype)


def group_std(values, g):
    return torch.tensor(values, dtype=torch.float64).view(-1, g).std(dim=1)


# Random groups: 1-3 prompts, G completions each, per-token mean log-prob m_i in [-20, 0], answer length n.
groups = st.integers(1, 3).flatmap(lambda k: st.sampled_from([2, 4, 8]).flatmap(lambda g: st.tuples(
    st.just(g), st.lists(st.integers(1, 12), min_size=k, max_size=k),
    st.lists(st.floats(-20, 0, allow_nan=False), min_size=k * g, max_size=k * g))))


def sums_from_means(means, ns, g):
    return [m * ns[i // g] for i, m in enumerate(means)]


@settings(max_examples=300, deadline=None)
@given(groups)
def test_sum_and_mean_differ_only_through_the_epsilon(case):
    """Exact algebra (float64): with d = m - mean(m) and s = std(m), A_mean = d/(s+eps) and
    A_sum = n d/(n s+eps) = d/(s+eps/n), so |A_sum - A_mean| = |A_mean| eps (1-1/n)/(s+eps/n) <= |A_mean| eps/s."""
    g, ns, means = case
    s = group_std(means, g)
    assume(bool((s > 0).all()))
    a_mean = trl_advantages(*single(means), g, True)
    a_sum = trl_advantages(*single(sums_from_means(means, ns, g)), g, True)
    bound = a_mean.abs() * EPS / s.repeat_interleave(g)
    assert ((a_sum - a_mean).abs() <= bound + 1e-9).all()


@settings(max_examples=300, deadline=None)
@given(groups)
def test_sum_and_mean_give_equal_advantages_in_trls_float32(case):
    """The tolerance 1e-3: |A_mean| <= (G-1)/sqrt(G) (the largest z-score a sample std allows), so the bound
    above is <= (G-1)/sqrt(G) * eps/s = 2.47 * 1e-4/0.3 = 8.2e-4 for G <= 8 and a within-group spread
    s >= 0.3 nats/token; float32 rounding (values <= 240 in size) adds about 1e-5. Smaller spreads: next test."""
    g, ns, means = case
    assume(bool((group_std(means, g) >= 0.3).all()))
    assert (g - 1) / math.sqrt(g) * EPS / 0.3 < 1e-3
    a_mean = trl_advantages(*single(means, torch.float32), g, True)
    a_sum = trl_advantages(*single(sums_from_means(means, ns, g), torch.float32), g, True)
    assert torch.allclose(a_sum, a_mean, rtol=0, atol=1e-3)


def test_near_tied_groups_are_where_the_epsilon_shows():
    """When a group's spread is comparable to eps, sum (spread n×larger) and mean are scaled differently."""
    means, n = [-1.0, -1.0 + 2e-4, -1.0, -1.0 + 2e-4], 8
    a_mean = trl_advantages(*single(means), 4, True)
    a_sum = trl_advantages(*single([m * n for m in means]), 4, True)
    assert (a_sum - a_mean).abs().max() > 0.2


@settings(max_examples=200, deadline=None)
@given(groups, st.lists(st.floats(-60, 0, allow_nan=False), min_size=3, max_size=3), st.booleans())
def test_a_per_prompt_constant_cancels_with_and_without_scaling(case, consts, scale):
    """debiased = sum - c_prompt: centring removes c, and the std does not see a shift."""
    g, ns, means = case
    sums = sums_from_means(means, ns, g)
    debiased = [r - consts[i // g] for i, r in enumerate(sums)]
    a = trl_advantages(*single(sums), g, scale)
    b = trl_advantages(*single(debiased), g, scale)
    assert torch.allclose(a, b, rtol=0, atol=1e-7)


# ---- where the choice really changes training ------------------------------------------
MEANS = [-0.2, -0.4, -1.0, -2.0]  # one group of G=4, per-token mean log-prob of the gold answer
N = 5                             # gold answer tokens
FORMAT = [0.5, 0.0, 0.0, 0.5]     # a format reward on the same completions


def mixed(logprob_values, fmt=FORMAT):
    """rewards_per_func [format, logprob] with weights 1 and 1 (notebook 02's sum of rewards)."""
    return torch.tensor([fmt, logprob_values], dtype=torch.float64).T, torch.ones(2, dtype=torch.float64)


def test_mixing_with_a_format_reward_breaks_the_cancellation():
    """The factor n scales the logprob part only: relative to the format reward it weighs n× more as sum."""
    a_mean = trl_advantages(*mixed(MEANS), 4, True)
    a_sum = trl_advantages(*mixed([m * N for m in MEANS]), 4, True)
    assert (a_sum - a_mean).abs().max() > 0.1
    # ...whereas a per-prompt shift still cancels inside the mix.
    shifted = trl_advantages(*mixed([m * N - 7.0 for m in MEANS]), 4, True)
    assert torch.allclose(shifted, a_sum, atol=1e-9)


def test_without_scaling_sum_and_mean_differ_by_the_factor_n():
    a_mean = trl_advantages(*single(MEANS), 4, False)
    a_sum = trl_advantages(*single([m * N for m in MEANS]), 4, False)
    assert torch.allclose(a_sum, N * a_mean, atol=1e-12)
    assert not torch.allclose(a_sum, a_mean, atol=0.1)


@pytest.mark.parametrize("transform", [math.exp, lambda x: max(x, -4.0)], ids=["exp", "clip"])
def test_non_linear_transforms_change_the_advantages(transform):
    """exp (prob, gmean_prob) and clipping are not affine, so no centring or scaling undoes them."""
    sums = [m * N for m in MEANS]  # -1, -2, -5, -10
    a_sum = trl_advantages(*single(sums), 4, True)
    a_t = trl_advantages(*single([transform(x) for x in sums]), 4, True)
    assert (a_t - a_sum).abs().max() > 0.1


def test_exp_of_sum_and_exp_of_mean_differ_too():
    """prob = exp(n·mean) vs gmean_prob = exp(mean): the factor n now sits inside the exponential."""
    a_prob = trl_advantages(*single([math.exp(m * N) for m in MEANS]), 4, True)
    a_gmean = trl_advantages(*single([math.exp(m) for m in MEANS]), 4, True)
    assert (a_prob - a_gmean).abs().max() > 0.1


def test_the_ablation_grid_pairs_behave_as_the_facts_say():
    """With the reward weights the ablation runner gives TRL: sum_only = mean_only; sum != mean (format on)."""
    from helpers import ablations
    from helpers.config import RULE_REWARDS

    def advantages(variant_name, per_token_means):
        v = ablations.normalized_variant(next(x for x in ablations.GRIDS["a100"] if x["name"] == variant_name))
        w = ablations.variant_reward_weights(v)
        names = list(RULE_REWARDS) + [f"logprob_{v['transform']}_reward"]
        lp = [m * N if v["transform"] == "sum" else m for m in per_token_means]
        # rule rewards: a format pattern on the format rewards, 2.0 (correct) on the first completion
        cols = [FORMAT if n != "correctness_reward" else [2.0, 0, 0, 0] for n in RULE_REWARDS] + [lp]
        return trl_advantages(torch.tensor(cols, dtype=torch.float64).T,
                              torch.tensor([w.get(n, 1.0) for n in names], dtype=torch.float64), 4,
                              v.get("scale_rewards", True))

    assert torch.allclose(advantages("sum_only", MEANS), advantages("mean_only", MEANS), atol=1e-3)
    assert (advantages("sum", MEANS) - advantages("mean", MEANS)).abs().max() > 0.1


def test_advantage_table_matches_trl_and_flags_tied_groups():
    """Notebook 01's table: one winner, one all-equal group (advantages 0, counted by frac_reward_zero_std)."""
    table, frac = advantage_table([[2.0], [0.0], [0.0], [0.0], [1.0], [1.0], [1.0], [1.0]], ["correctness"],
                                  num_generations=4)
    assert frac == 0.5
    assert table["advantage"].tolist()[4:] == [0.0] * 4
    assert table["advantage"].tolist()[0] == pytest.approx(1.5, abs=1e-3)
    two, _ = advantage_table([[0.5, 2.0], [0.5, 0.0], [0.0, 0.0], [0.0, 2.0]], ["format", "correct"], [1.0, 0.5])
    assert two["weighted sum"].tolist() == [1.5, 0.5, 0.0, 1.0]


LOSS_LINES = (
    "loss = ((per_token_loss * completion_mask).sum(-1) / completion_mask.sum(-1).clamp(min=1.0)).mean()",
    "loss = (per_token_loss * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)",
    "loss = (per_token_loss * completion_mask).sum() / (per_token_loss.size(0) * self.max_completion_length)",
)


def test_loss_copy_matches_installed_trl():
    """grpo_math.trl_loss holds TRL 0.18.2's three loss reductions (grpo, bnpo, dr_grpo) line for line."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    from helpers.grpo_math import trl_loss

    trl_lines = [ln.strip() for ln in inspect.getsource(GRPOTrainer._compute_loss).splitlines()]
    ours = [ln.strip() for ln in inspect.getsource(trl_loss).splitlines()]
    for line in LOSS_LINES:
        assert line in trl_lines, f"TRL's loss code changed: {line!r}; update grpo_math.trl_loss"
        assert line.replace("self.", "") in ours


def test_token_weights_per_loss_type():
    """grpo weighs a token by 1/(G·|o_i|) (short completions' tokens count more), bnpo by 1/Σ|o| over the batch,
    dr_grpo by 1/(G·L): a constant, so a completion's total weight grows with its length."""
    from helpers.grpo_math import token_weights

    lengths, L = [8, 8, 64, 64], 96
    grpo, bnpo, dr = (token_weights(lengths, t, L) for t in ("grpo", "bnpo", "dr_grpo"))
    for i, n in enumerate(lengths):
        assert grpo[i, 0] == pytest.approx(1 / (4 * n)) and grpo[i, :n].sum() == pytest.approx(1 / 4)
        assert bnpo[i, 0] == pytest.approx(1 / sum(lengths)) and dr[i, 0] == pytest.approx(1 / (4 * L))
        assert grpo[i, n:].abs().sum() == 0 and dr[i, n:].abs().sum() == 0  # padding gets nothing
    assert dr[2].sum() == pytest.approx(8 * dr[0].sum())
    with pytest.raises(ValueError, match="loss_type"):
        token_weights(lengths, "sapo", L)
