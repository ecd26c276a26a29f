"""Readable numpy reference of fairkernels.group_advantages: one Python loop over groups,
float64 throughout.  Also small reimplementations of the three public references of the
spec (TRL, verl's loop, the authors' rank code) in their own style."""

from __future__ import annotations

import math

import numpy as np


def group_rows(n, group_size=None, group_ids=None):
    if group_size is not None:
        return [np.arange(g * group_size, (g + 1) * group_size) for g in range(n // group_size)]
    ids = np.asarray(group_ids)
    return [np.flatnonzero(ids == value) for value in np.unique(ids)]


def masked_likelihood(token_logp, mask, kind):
    logp = np.asarray(token_logp, dtype=np.float64)
    weight = np.asarray(mask, dtype=np.float64)
    total = np.where(weight != 0, weight * np.where(weight != 0, logp, 0.0), 0.0).sum(axis=1)
    if kind == "sum":
        return total
    count = weight.sum(axis=1)
    return np.divide(total, count, out=np.zeros_like(total), where=count != 0)


def ranks(values, ties):
    """0 = smallest.  "first": ties by position; "average": mean of the tied positions."""
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values))
    rank[order] = np.arange(len(values))
    if ties == "average":
        for v in np.unique(values):
            tied = values == v
            rank[tied] = rank[tied].mean()
    return rank


def pass_at_k_statistics(rewards, k):
    """The spec's pass@k formulas, written as they read ("Beyond the paper"): for the m values
    sorted ascending, r(1) <= ... <= r(m), and k' = min(k, m),
        mu    = sum_j r(j) C(j-1, k'-1) / C(m, k'),   nu = sum_j r(j)^2 C(j-1, k'-1) / C(m, k'),
        sigma = sqrt(nu - mu^2),
        E(i)  = [r(i) C(i-1, k'-1) + sum_{j>i} r(j) C(j-2, k'-2)] / C(m-1, k'-1)   (k' >= 2),
        E(i)  = r(i)                                                              (k' = 1).
    Binomials are Python integers (exact, never overflow) and every ratio is one correctly
    rounded int / int division.  Returns (E in the input order, mu, sigma)."""
    x = np.asarray(rewards, dtype=np.float64)
    m = len(x)
    k = min(k, m)
    order = np.argsort(x, kind="stable")
    r = x[order]  # r[j - 1] = r(j)
    weight = np.array([math.comb(j - 1, k - 1) / math.comb(m, k) for j in range(1, m + 1)])
    mu = float(np.sum(weight * r))
    # sigma^2 = nu - mu^2, written as the centred second moment: the same number, without the
    # cancellation of nu - mu^2 (which gives 6e-8 instead of 0 for [0, 3.5, 3.5], k = 2).
    sigma = math.sqrt(float(np.sum(weight * (r - mu) ** 2)))
    expected_sorted = np.empty(m)
    for i in range(1, m + 1):
        if k == 1:
            expected_sorted[i - 1] = r[i - 1]
            continue
        total = r[i - 1] * math.comb(i - 1, k - 1)
        total += sum(r[j - 1] * math.comb(j - 2, k - 2) for j in range(i + 1, m + 1))
        expected_sorted[i - 1] = total / math.comb(m - 1, k - 1)
    expected = np.empty(m)
    expected[order] = expected_sorted
    return expected, mu, sigma


@np.errstate(invalid="ignore", over="ignore", divide="ignore")  # +-inf rewards and eps = 0: see the rules below
def reference_group_advantages(
    rewards,
    group_size=None,
    group_ids=None,
    seq_logp=None,
    token_logp=None,
    mask=None,
    likelihood="mean",
    beta_rank=0.0,
    ties="average",
    baseline="mean",
    scale="group",
    unbiased=True,
    eps=1e-6,
    singleton="zero",
    pass_k=None,
    signal_tol=0.0,
    nan_rewards="missing",
):
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if beta_rank != 0:
        lik = (
            np.asarray(seq_logp, np.float64)
            if seq_logp is not None
            else masked_likelihood(token_logp, mask, likelihood)
        )
    ddof = 1 if unbiased else 0
    centered = np.zeros(n)
    divisor = np.ones(n)
    reweighted_all = []
    pass_k_moments = []  # (m, mu, sigma^2) of the pass@k groups, for scale="batch"
    signal = np.zeros(n, dtype=bool)
    for rows in group_rows(n, group_size, group_ids):
        valid = rows[~np.isnan(r[rows])]
        m = len(valid)
        if nan_rewards == "propagate" and m < len(rows):
            centered[rows] = np.nan  # verl / OpenRLHF: a NaN reward makes its group's statistics NaN
            continue
        if signal_tol == 0:
            signal[rows] = m >= 2 and len(np.unique(r[valid])) > 1
        else:
            signal[rows] = m >= 2 and r[valid].std(ddof=ddof) > signal_tol
        if m == 0:
            continue
        x = r[valid].copy()
        poisoned = False
        if beta_rank != 0:
            if np.isnan(lik[valid]).any():
                poisoned = True
            else:
                x = x * (1 - beta_rank * ranks(lik[valid], ties) / m)
        if pass_k is not None and m >= 2:
            # The subset-maximum distribution replaces the rewards: baseline mu, its std.
            e, mu, sigma = pass_at_k_statistics(x, pass_k)
            centered[valid] = np.nan if poisoned else e - mu
            divisor[valid] = sigma + eps
            if not poisoned:
                pass_k_moments.append((m, mu, sigma**2))
            continue
        # The numerical rules (README, "Numerical edge cases"): a constant group is centred to
        # exactly 0; an infinite reward, or a sum / squared deviation beyond float64, poisons
        # the group (NaN, left out of the batch std).
        constant = m >= 2 and bool(np.all(x == x[0]))
        total = x.sum()
        m2 = 0.0 if constant else ((x - total / m) ** 2).sum()
        poisoned = poisoned or not np.isfinite(total) or (scale != "none" and not np.isfinite(m2))
        if not poisoned:
            reweighted_all.append(x)
        if m == 1:
            centered[valid] = x if singleton == "raw" else 0.0
            group_std = 1.0
        elif constant:
            centered[valid] = 0.0
            group_std = 0.0
        else:
            base = (x.sum() - x) / (m - 1) if baseline == "loo" else x.mean()
            centered[valid] = x - base
            group_std = x.std(ddof=ddof) if m > ddof else 0.0
        if poisoned:
            centered[valid] = np.nan
        divisor[valid] = group_std + eps
    rewarded = ~np.isnan(r)
    if scale == "batch" and pass_k is not None:
        # Pool the groups' subset-maximum distributions (singletons: one point at their
        # reward), each weighted by its m: a population std.
        pass_k_moments += [(1, float(x[0]), 0.0) for x in reweighted_all]
        count = sum(c for c, _, _ in pass_k_moments)
        mean = sum(c * mu for c, mu, _ in pass_k_moments) / count if count else 0.0
        var = sum(c * (v + (mu - mean) ** 2) for c, mu, v in pass_k_moments) / count if count else 0.0
        divisor[:] = math.sqrt(var) + eps
    elif scale == "batch":
        allx = np.concatenate(reweighted_all) if reweighted_all else np.zeros(0)
        batch_std = allx.std(ddof=ddof) if len(allx) > ddof else 0.0
        divisor[:] = batch_std + eps
        if not np.isfinite(batch_std):  # a batch std beyond float64: no rewarded row is defined
            centered[rewarded] = np.nan
            divisor[:] = 1.0
    if scale == "none":
        adv = centered
    else:
        # std 0 with eps = 0: the centred values are 0 (or their squares underflow): advantage 0.
        adv = np.where(divisor > 0, centered / divisor, centered * 0.0)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:  # a bool mask selects (NaN advantages stay off the padding)
            adv = np.where(mask, adv[:, None], 0.0)
        else:  # a float mask multiplies
            adv = adv[:, None] * mask.astype(np.float64)
    return adv, signal


# ---- the public references, in their own style --------------------------------------------


def trl_advantages(rewards, group_size, scale="group", eps=1e-4):
    """TRL GRPOTrainer: view(-1, G), mean, unbiased std, (r - mean) / (std + 1e-4)."""
    import torch

    r = torch.as_tensor(rewards, dtype=torch.float64)
    grouped = r.view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    advantages = r - mean
    if scale == "group":
        std = grouped.std(dim=1).repeat_interleave(group_size)
    elif scale == "batch":
        std = r.std().expand_as(r)
    else:
        return advantages.numpy()
    return (advantages / (std + eps)).numpy()


def verl_loop_advantages(scores, index, response_mask, eps=1e-6):
    """verl compute_grpo_outcome_advantage: Python loop over uid groups."""
    from collections import defaultdict

    import torch

    scores = torch.as_tensor(scores, dtype=torch.float64).clone()
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx] = torch.tensor(0.0, dtype=torch.float64)
            id2std[idx] = torch.tensor(1.0, dtype=torch.float64)
        else:
            values = torch.stack(id2score[idx])
            id2mean[idx] = values.mean()
            id2std[idx] = values.std()
    for i in range(len(scores)):
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
    return (scores.unsqueeze(-1) * torch.as_tensor(response_mask, dtype=torch.float64)).numpy()


def authors_rank_scores(scores, mean_logp, group_size, beta):
    """The authors' unlikeliness reweighting: rank = argsort(argsort(mean logp)) per group."""
    s = np.asarray(scores, dtype=np.float64).copy()
    for start in range(0, len(s), group_size):
        block = slice(start, start + group_size)
        rank = np.argsort(np.argsort(mean_logp[block]))
        s[block] = s[block] * (1 - rank / group_size * beta)
    return s


def trl_multi_reward_advantages(rewards_per_func, reward_weights, num_generations, aggregation, scale_rewards="group"):
    """TRL 1.16.0, GRPOTrainer._generate_and_score_completions, trl/trainer/grpo_trainer.py
    lines 2756-2809 (unscorable rows, the two multi_objective_aggregation modes, nan_to_num),
    with trl.trainer.utils.nanstd (lines 1021-1049), reimplemented in numpy float64."""

    def nanstd(x, axis=None, keepdims=False):
        mean = np.nanmean(x, axis=axis, keepdims=True)
        variance = np.nanmean((x - mean) ** 2, axis=axis, keepdims=True)
        count = np.sum(~np.isnan(x), axis=axis, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            # TRL divides two int64 tensors: torch returns the default dtype, so the Bessel
            # factor count / (count - 1) is rounded to float32 (a relative 3e-8 in the std).
            bessel = (count / (count - 1)).astype(np.float32).astype(np.float64)
            variance = variance * np.where(count > 1, bessel, np.nan)
        std = np.sqrt(variance)
        return std if keepdims else np.squeeze(std, axis=axis)

    import warnings

    r = np.asarray(rewards_per_func, dtype=np.float64)
    w = np.asarray(reward_weights, dtype=np.float64)
    G = num_generations
    unscorable = np.isnan(r).all(axis=1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN slices
        if aggregation == "sum_then_normalize":
            s = np.nansum(r * w[None, :], axis=1)
            s[unscorable] = np.nan
            mean = np.repeat(np.nanmean(s.reshape(-1, G), axis=1), G)
            if scale_rewards in ("group", "none"):
                std = np.repeat(nanstd(s.reshape(-1, G), axis=1), G) if G > 1 else np.zeros_like(s)
            else:
                std = np.full_like(s, nanstd(s)) if s.size > 1 else np.zeros_like(s)
            advantages = s - mean
            if scale_rewards != "none":
                advantages = advantages / (std + 1e-4)
        else:
            grouped = r.reshape(-1, G, r.shape[1])
            mean_k = np.nanmean(grouped, axis=1, keepdims=True)
            std_k = nanstd(grouped, axis=1, keepdims=True) if G > 1 else np.zeros_like(mean_k)
            z = ((grouped - mean_k) / (std_k + 1e-4)).reshape(-1, r.shape[1])
            s = np.nansum(z * w[None, :], axis=1)
            s[unscorable] = np.nan
            std = np.full_like(s, nanstd(s)) if s.size > 1 else np.zeros_like(s)
            advantages = (s - np.nanmean(s)) / (std + 1e-4)
    return np.nan_to_num(advantages, nan=0.0)
