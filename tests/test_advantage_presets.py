"""Framework presets (preset="verl" | "trl" | "openrlhf") against each framework's own code:
verl 0.9.1's estimators and TRL 1.16.0's trainer code where installed, OpenRLHF (not
installable here: it needs deepspeed and a GPU stack) through a faithful copy of its
group_norm / rloo / reinforce_baseline branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fairkernels
from fairkernels.advantage import DEFAULTS, PRESETS
from test_advantage_multi import run_trl, trl_code  # noqa: F401  (trl_code is a fixture)


def ragged_scores(seed, with_nan):
    """uid groups of sizes 12, 9, 1, 17, 1 in shuffled order (verl's index), graded scores, an
    all-equal group, and optionally NaN scores (one in a group, one singleton)."""
    rng = np.random.default_rng(seed)
    index = rng.permutation(np.array([0] * 12 + [1] * 9 + [2] * 1 + [3] * 17 + [4] * 1))
    scores = rng.choice([0.0, 1.0, 0.3], size=len(index)) + rng.normal(0, 0.01, size=len(index))
    scores[index == 3] = 0.25
    if with_nan:
        scores[np.flatnonzero(index == 1)[2]] = np.nan
        scores[index == 4] = np.nan
    return index, scores


# ---- verl ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verl():
    return pytest.importorskip("verl.trainer.ppo.core_algos")


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_verl_grpo(verl, with_nan, norm_by_std):
    index, scores = ragged_scores(0, with_nan)
    n, T = len(scores), 6
    mask = torch.tensor(np.random.default_rng(1).random((n, T)) < 0.8, dtype=torch.float64)
    token_rewards = torch.zeros(n, T, dtype=torch.float64)
    token_rewards[:, -1] = torch.tensor(scores)  # the score sits on the last token
    expected, _ = verl.compute_grpo_outcome_advantage(token_rewards, mask, index, norm_adv_by_std_in_grpo=norm_by_std)
    got = fairkernels.group_advantages(torch.tensor(scores), group_ids=torch.tensor(index), mask=mask, preset="verl",
                                       scale="group" if norm_by_std else "none")
    # verl's singletons divide by torch.tensor(1.0) + epsilon, a float32 1 + 1e-6 (4.6e-8 off)
    singleton = torch.tensor(np.isin(index, [2, 4]))
    torch.testing.assert_close(got[~singleton], expected[~singleton], rtol=1e-12, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(got[singleton], expected[singleton], rtol=1e-7, atol=1e-12, equal_nan=True)
    assert torch.isnan(got).any() == with_nan


@pytest.mark.parametrize("with_nan", [False, True])
def test_verl_rloo(verl, with_nan):
    index, scores = ragged_scores(2, with_nan)
    mask = torch.ones(len(scores), 3, dtype=torch.float64)
    token_rewards = torch.zeros(len(scores), 3, dtype=torch.float64)
    token_rewards[:, 0] = torch.tensor(scores)
    expected, _ = verl.compute_rloo_outcome_advantage(token_rewards, mask, index)
    got = fairkernels.group_advantages(torch.tensor(scores), group_ids=torch.tensor(index), mask=mask, preset="verl",
                                       baseline="loo", scale="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_verl_float32_and_the_zero_variance_flag(verl):
    index, scores = ragged_scores(3, False)
    mask = torch.ones(len(scores), 1)
    token_rewards = torch.tensor(scores, dtype=torch.float32)[:, None]
    expected, _ = verl.compute_grpo_outcome_advantage(token_rewards, mask, index)
    got, signal = fairkernels.group_advantages(token_rewards[:, 0], group_ids=torch.tensor(index), preset="verl",
                                               return_signal=True)
    torch.testing.assert_close(got, expected[:, 0], rtol=1e-5, atol=1e-5)  # verl reduces in float32
    # verl's zero-variance rule (its DAPO filter keeps groups with std > 0): the all-equal group
    # and the singletons carry no signal, the others do
    assert not signal[index == 3].any() and not signal[index == 2].any() and signal[index == 0].all()


# ---- TRL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_one_reward_function(trl_code, scale):  # noqa: F811
    rng = np.random.default_rng(4)
    G, n = 8, 8 * 12
    rewards = rng.choice([0.0, 1.0, 0.5], size=n) + rng.normal(0, 0.01, size=n)
    rewards[rng.random(n) < 0.1] = np.nan
    rewards[8:16] = 0.75  # zero std
    rewards[16:24] = np.nan
    rewards[24:32] = [np.nan] * 7 + [1.0]  # one scorable sample
    r = torch.tensor(rewards)
    expected = run_trl(trl_code, r[:, None], torch.ones(1, dtype=torch.float64), G, "sum_then_normalize", scale)
    got, signal = fairkernels.group_advantages(r, group_size=G, preset="trl", scale=scale, return_signal=True)
    torch.testing.assert_close(got, expected, rtol=2e-7, atol=2e-7)  # TRL's float32 Bessel factor
    if scale == "group":
        # TRL's is_std_zero (isclose(std, 0)) on the groups with a std (two or more rewards)
        std = torch.tensor([np.nanstd(g, ddof=1) if np.sum(~np.isnan(g)) > 1 else np.nan
                            for g in rewards.reshape(-1, G)]).repeat_interleave(G)
        has_std = ~torch.isnan(std)
        assert torch.equal(signal[has_std], ~torch.isclose(std, torch.zeros_like(std))[has_std])
        assert not signal[~has_std].any()


# ---- OpenRLHF (faithful copy) -------------------------------------------------------------------


def openrlhf_rewards(rewards, n_samples_per_prompt, advantage_estimator):
    """OpenRLHF, openrlhf/trainer/ppo_utils/experience_maker.py (RemoteExperienceMaker,
    compute_advantages_and_returns), the branches that shape the scalar rewards per prompt:
        rewards = rewards.reshape(-1, n_samples_per_prompt)
        rloo:                 baseline = (rewards.sum(-1, keepdim=True) - rewards) / (n - 1)
        reinforce_baseline /
        dr_grpo:              rewards = rewards - rewards.mean(-1, keepdim=True)
        group_norm:           (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)
    """
    rewards = rewards.reshape(-1, n_samples_per_prompt)
    if advantage_estimator == "rloo":
        baseline = (rewards.sum(-1, keepdim=True) - rewards) / (n_samples_per_prompt - 1)
        rewards = rewards - baseline
    elif advantage_estimator in ("reinforce_baseline", "dr_grpo"):
        rewards = rewards - rewards.mean(-1, keepdim=True)
    elif advantage_estimator == "group_norm":
        rewards = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)
    return rewards.reshape(-1)


@pytest.mark.parametrize("estimator,options", [("group_norm", {}), ("rloo", dict(baseline="loo", scale="none")),
                                               ("dr_grpo", dict(scale="none"))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_openrlhf(estimator, options, dtype):
    rng = np.random.default_rng(5)
    rewards = torch.tensor(rng.choice([0.0, 1.0, 0.2], size=16 * 10) + rng.normal(0, 0.01, size=160), dtype=dtype)
    rewards[16:32] = 0.5  # zero std: 0 / 1e-9 = 0
    rewards[40] = float("nan")
    expected = openrlhf_rewards(rewards, 16, estimator)
    got = fairkernels.group_advantages(rewards, group_size=16, preset="openrlhf", **options)
    tol = 1e-11 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol, equal_nan=True)
    assert torch.isnan(got[32:48]).all() and not torch.isnan(got[48:]).any()


# ---- the preset mechanics -------------------------------------------------------------------------


def test_explicit_arguments_override_the_preset():
    index, scores = ragged_scores(6, True)
    r, ids = torch.tensor(scores), torch.tensor(index)

    def same(a, b):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)

    for preset, values in PRESETS.items():
        same(fairkernels.group_advantages(r, group_ids=ids, preset=preset),
             fairkernels.group_advantages(r, group_ids=ids, **values))
        overrides = dict(eps=0.5, nan_rewards="missing", singleton="raw", unbiased=False, signal_tol=0.1)
        same(fairkernels.group_advantages(r, group_ids=ids, preset=preset, **overrides),
             fairkernels.group_advantages(r, group_ids=ids, **overrides))
    same(fairkernels.group_advantages(r, group_ids=ids), fairkernels.group_advantages(r, group_ids=ids, **DEFAULTS))


def test_presets_differ_where_the_frameworks_do():
    scores = np.array([1.0, 0.0, 0.0, 0.0, 2.0, 2.5])
    ids = np.array([0, 0, 0, 0, 1, 2])
    verl = fairkernels.group_advantages(scores, group_ids=ids, preset="verl")
    trl = fairkernels.group_advantages(scores, group_ids=ids, preset="trl")
    openrlhf = fairkernels.group_advantages(scores, group_ids=ids, preset="openrlhf")
    np.testing.assert_allclose(verl[4:], [2.0 / (1 + 1e-6), 2.5 / (1 + 1e-6)])  # verl: raw singletons
    assert (trl[4:] == 0).all() and (openrlhf[4:] == 0).all()
    std = np.std(scores[:4], ddof=1)
    np.testing.assert_allclose([verl[0], trl[0], openrlhf[0]], [0.75 / (std + e) for e in (1e-6, 1e-4, 1e-9)],
                               rtol=1e-13)


def test_bad_preset():
    with pytest.raises(ValueError, match="preset must be one of 'verl', 'trl', 'openrlhf'"):
        fairkernels.group_advantages(np.zeros(4), group_size=2, preset="deepspeed")
