"""Pass@k advantages (``pass_k``): the numpy reference against brute-force enumeration of
subsets and exact rational arithmetic, the kernel against the reference and against exact
integer arithmetic on groups of up to 10,000 rows, the invariants of the spec (hypothesis),
and the combinations with the other options (rank reweighting, ragged groups, NaN rows,
token broadcast, out=, return_signal, torch)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fairkernels
from advantage_reference import pass_at_k_statistics, reference_group_advantages
from test_advantage import awkward_batch, ragged_ids

# ---- three independent computations of the same statistics ------------------------------------


def brute_force_pass_at_k(rewards, k):
    """Every k-subset enumerated: each row's advantage is the mean over the subsets holding it
    of (subset max - mean subset max); also the population std of the subset max."""
    x = [Fraction(v) for v in rewards]
    m = len(x)
    k = min(k, m)
    subsets = list(itertools.combinations(range(m), k))
    best = {s: max(x[i] for i in s) for s in subsets}
    mu = sum(best.values()) / len(subsets)
    variance = sum((b - mu) ** 2 for b in best.values()) / len(subsets)
    expected = [sum(best[s] for s in subsets if i in s) / sum(1 for s in subsets if i in s) for i in range(m)]
    return [e - mu for e in expected], variance


def exact_pass_at_k(rewards, k):
    """The spec's closed form in exact rationals (fractions.Fraction)."""
    x = [Fraction(v) for v in rewards]
    m = len(x)
    k = min(k, m)
    order = sorted(range(m), key=lambda i: x[i])
    r = [x[i] for i in order]
    mu = sum(r[j - 1] * math.comb(j - 1, k - 1) for j in range(1, m + 1)) / Fraction(math.comb(m, k))
    nu = sum(r[j - 1] ** 2 * math.comb(j - 1, k - 1) for j in range(1, m + 1)) / Fraction(math.comb(m, k))
    centered = [Fraction(0)] * m
    for i in range(1, m + 1):
        if k == 1:
            e = r[i - 1]
        else:
            e = (r[i - 1] * math.comb(i - 1, k - 1) + sum(r[j - 1] * math.comb(j - 2, k - 2)
                                                           for j in range(i + 1, m + 1))) / math.comb(m - 1, k - 1)
        centered[order[i - 1]] = e - mu
    return centered, nu - mu * mu


small_groups = st.lists(st.sampled_from([0.0, 1.0, 0.25, -2.0, 3.5, 0.5]), min_size=1, max_size=9)


@settings(max_examples=150, deadline=None)
@given(rewards=small_groups, k=st.integers(1, 11))
def test_closed_form_equals_brute_force_enumeration_exactly(rewards, k):
    centered, variance = brute_force_pass_at_k(rewards, k)
    exact_centered, exact_variance = exact_pass_at_k(rewards, k)
    assert exact_centered == centered and exact_variance == variance


@settings(max_examples=150, deadline=None)
@given(rewards=small_groups, k=st.integers(1, 11))
def test_numpy_reference_equals_exact_fractions(rewards, k):
    expected, mu, sigma = pass_at_k_statistics(rewards, k)
    exact_centered, exact_variance = exact_pass_at_k(rewards, k)
    np.testing.assert_allclose(expected - mu, [float(c) for c in exact_centered], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sigma, math.sqrt(exact_variance), rtol=1e-12, atol=1e-13)


def test_binary_rewards_reduce_to_the_papers_analytic_form():
    # Chen et al. 2025: mu = 1 - C(m_neg, k) / C(m, k), sigma = sqrt(mu (1 - mu)),
    # A_pos = (1 - mu) / sigma, A_neg = (1 - mu - C(m_neg - 1, k - 1) / C(m - 1, k - 1)) / sigma,
    # evaluated in exact rationals (1 - mu is 6e-8 in the last case: float64 would cancel).
    for m, m_neg, k in [(16, 11, 4), (32, 31, 8), (64, 20, 8), (1024, 1000, 512)]:
        rewards = np.array([0.0] * m_neg + [1.0] * (m - m_neg))
        one_minus_mu = Fraction(math.comb(m_neg, k), math.comb(m, k))
        sigma = math.sqrt((1 - one_minus_mu) * one_minus_mu)
        a_pos = float(one_minus_mu) / sigma
        a_neg = float(one_minus_mu - Fraction(math.comb(m_neg - 1, k - 1), math.comb(m - 1, k - 1))) / sigma
        got = fairkernels.group_advantages(rewards, group_size=m, pass_k=k, eps=0.0)
        np.testing.assert_allclose(got[:m_neg], a_neg, rtol=1e-12)
        np.testing.assert_allclose(got[m_neg:], a_pos, rtol=1e-12)


# ---- large groups: exact integer arithmetic ---------------------------------------------------


def exact_large(numerators, denominator, k):
    """E_i - mu and the variance for rewards numerators / denominator, in Python integers (one
    correctly rounded division per result): fast enough for m = 10,000."""
    m = len(numerators)
    k = min(k, m)
    order = sorted(range(m), key=lambda i: numerators[i])
    n = [numerators[i] for i in order]
    c_top = [0] * m  # c_top[j - 1] = C(j-1, k-1), built by exact integer steps
    c_top[k - 1] = 1
    for j in range(k + 1, m + 1):
        c_top[j - 1] = c_top[j - 2] * (j - 1) // (j - k)
    c_all, c_row = c_top[m - 1] * m // k, c_top[m - 1]  # C(m, k), C(m-1, k-1)
    mu_num = sum(a * b for a, b in zip(n, c_top))  # mu = mu_num / (den * c_all)
    nu_num = sum(a * a * b for a, b in zip(n, c_top))  # nu = nu_num / (den^2 * c_all)
    centered = [0.0] * m
    tail = 0  # sum_{j>i} n(j) C(j-2, k-2), with C(j-2, k-2) = C(j-1, k-1) (k-1) / (j-1)
    for i in range(m, 0, -1):
        if k == 1:
            e_num, row_den = n[i - 1], 1  # E = r(i)
        else:
            e_num, row_den = n[i - 1] * c_top[i - 1] + tail, c_row  # E = e_num / (den * c_row)
            if i >= 2:
                tail += n[i - 1] * (c_top[i - 1] * (k - 1) // (i - 1))
        centered[order[i - 1]] = (e_num * c_all - mu_num * row_den) / (denominator * row_den * c_all)
    variance = (nu_num * c_all - mu_num * mu_num) / (denominator**2 * c_all * c_all)
    return np.array(centered), variance


@pytest.mark.parametrize("m,k", [(1024, 512), (10_000, 1), (10_000, 2), (10_000, 100), (10_000, 5_000),
                                 (10_000, 9_999), (10_000, 10_000), (10_000, 50_000)])
def test_large_groups_against_exact_integers(m, k):
    rng = np.random.default_rng(m + k)
    numerators = rng.integers(-40, 41, size=m)  # rewards in eighths: exact in float32 and float64
    numerators[: m // 3] = 8  # many ties
    numerators = rng.permutation(numerators).tolist()
    rewards = np.array(numerators, dtype=np.float64) / 8
    centered, variance = exact_large(numerators, 8, k)
    sigma = math.sqrt(max(variance, 0.0))
    got = fairkernels.group_advantages(rewards, group_size=m, pass_k=k, scale="none")
    np.testing.assert_allclose(got, centered, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(centered).max()))
    got = fairkernels.group_advantages(rewards, group_size=m, pass_k=k)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, centered / (sigma + 1e-6), rtol=1e-8, atol=1e-10)
    assert abs(got.sum()) <= 1e-9 * np.abs(got).sum() + 1e-12


# ---- invariants (hypothesis) ------------------------------------------------------------------

reward_lists = st.lists(st.sampled_from([0.0, 1.0, 0.25, -2.0, 3.5]), min_size=2, max_size=40)


@settings(max_examples=200, deadline=None)
@given(rewards=reward_lists, scale=st.sampled_from(["group", "batch", "none"]), seed=st.integers(0, 2**31))
def test_pass_1_is_plain_grpo_with_the_population_std(rewards, scale, seed):
    r = np.array(rewards * 2)
    logp = np.random.default_rng(seed).normal(size=len(r))
    options = dict(group_size=len(rewards), seq_logp=logp, beta_rank=0.25, scale=scale)
    np.testing.assert_allclose(fairkernels.group_advantages(r, pass_k=1, **options),
                               fairkernels.group_advantages(r, unbiased=False, **options), rtol=1e-9, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(rewards=reward_lists, k=st.integers(1, 50), beta=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_pass_k_advantages_sum_to_zero_over_each_group(rewards, k, beta, seed):
    r = np.array(rewards * 3)
    logp = np.random.default_rng(seed).normal(size=len(r))
    got = fairkernels.group_advantages(r, group_size=len(rewards), seq_logp=logp, beta_rank=beta, pass_k=k,
                                       scale="none")
    np.testing.assert_allclose(got.reshape(3, -1).sum(axis=1), 0.0, atol=1e-12 * max(1, len(rewards)))


@settings(max_examples=200, deadline=None)
@given(rewards=reward_lists, k=st.integers(1, 50), seed=st.integers(0, 2**31), beta=st.sampled_from([0.0, 0.25]))
def test_pass_k_is_invariant_to_the_order_of_rows_within_a_group(rewards, k, seed, beta):
    rng = np.random.default_rng(seed)
    r = np.array(rewards)
    logp = rng.normal(size=len(r)).round(1)  # ties in the likelihood too ("average" ties)
    options = dict(group_size=len(r), pass_k=k, beta_rank=beta, ties="average")
    got = fairkernels.group_advantages(r, seq_logp=logp, **options)
    perm = rng.permutation(len(r))
    permuted = fairkernels.group_advantages(r[perm], seq_logp=logp[perm], **options)
    np.testing.assert_array_equal(permuted, got[perm])  # bit for bit


# ---- the kernel against the reference, with the other options --------------------------------

SOURCES = ("none", "seq", "token_mean")


@pytest.mark.parametrize("k", [1, 2, 3, 5, 100])
@pytest.mark.parametrize(
    "source,scale,singleton,grouping",
    list(itertools.product(SOURCES, ("group", "batch", "none"), ("zero", "raw"), ("fixed", "ragged"))),
)
def test_matches_reference_with_the_other_options(k, source, scale, singleton, grouping):
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=k + len(scale))
    rng = np.random.default_rng(1)
    kwargs = dict(group_size=5) if grouping == "fixed" else dict(group_ids=ragged_ids(rng, len(rewards)))
    beta = 0.0 if source == "none" else 0.25
    if source == "seq":
        kwargs["seq_logp"] = seq_logp
    elif source == "token_mean":
        kwargs.update(token_logp=token_logp, mask=mask)  # ranks from tokens, token-level result
    for dtype in (np.float64, np.float32):
        typed = {k_: (v.astype(dtype) if k_ in ("seq_logp", "token_logp") else v) for k_, v in kwargs.items()}
        got, signal = fairkernels.group_advantages(rewards.astype(dtype), beta_rank=beta, scale=scale,
                                                   singleton=singleton, pass_k=k, return_signal=True, **typed)
        expected, expected_signal = reference_group_advantages(rewards, beta_rank=beta, scale=scale,
                                                               singleton=singleton, pass_k=k, **kwargs)
        assert got.dtype == dtype and got.shape == expected.shape
        tol = 1e-11 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        np.testing.assert_array_equal(signal, expected_signal)


def test_nan_rows_get_zero_and_do_not_count():
    rewards = np.array([1.0, np.nan, 0.0, 0.5, np.nan, 1.0, 0.0, 0.25])
    got = fairkernels.group_advantages(rewards, group_size=8, pass_k=3)
    keep = ~np.isnan(rewards)
    without = fairkernels.group_advantages(rewards[keep], group_size=int(keep.sum()), pass_k=3)
    assert (got[~keep] == 0).all()
    np.testing.assert_array_equal(got[keep], without)


def test_nan_likelihood_poisons_its_group():
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    logp = np.array([-1.0, np.nan, -2.0, -1.0, -3.0, -2.0])
    got = fairkernels.group_advantages(rewards, group_size=3, seq_logp=logp, beta_rank=0.25, pass_k=2)
    assert np.isnan(got[:3]).all() and np.isfinite(got[3:]).all()


def test_token_broadcast_and_out_buffer():
    rewards, _, token_logp, mask = awkward_batch(seed=21)
    per_row = fairkernels.group_advantages(rewards, group_size=5, pass_k=3)
    buffer = np.full((30, 12), 7.0)
    got = fairkernels.group_advantages(rewards, group_size=5, mask=mask, pass_k=3, out=buffer[:, 2:9])
    assert got.base is buffer
    np.testing.assert_array_equal(got, per_row[:, None] * mask)
    assert (buffer[:, :2] == 7).all() and (buffer[:, 9:] == 7).all()


def test_k_larger_than_the_group_uses_the_whole_group():
    rewards = np.array([0.0, 1.0, 0.5, 2.0])
    assert (fairkernels.group_advantages(rewards, group_size=4, pass_k=4) == 0).all()
    np.testing.assert_array_equal(fairkernels.group_advantages(rewards, group_size=4, pass_k=9),
                                  fairkernels.group_advantages(rewards, group_size=4, pass_k=4))


def test_bit_identical_whatever_the_thread_count():
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, fairkernels, hashlib;"
        "rng=np.random.default_rng(0); r=rng.random(4096*16);"
        "a=fairkernels.group_advantages(r, group_ids=rng.integers(0,3000,len(r)), pass_k=4, scale='batch');"
        "print(hashlib.sha256(a.tobytes()).hexdigest())"
    )
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": t},
                              capture_output=True, text=True, check=True).stdout for t in ("1", "2", "3")}
    assert len(digests) == 1, digests


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(pass_k=0), ValueError, "pass_k must be >= 1"),
        (dict(pass_k=2.0), TypeError, "pass_k must be an int"),
        (dict(pass_k=True), TypeError, "pass_k must be an int"),
        (dict(pass_k=2, baseline="loo"), ValueError, "pass_k sets its own baseline"),
    ],
)
def test_bad_pass_k(kwargs, error, match):
    with pytest.raises(error, match=match):
        fairkernels.group_advantages(np.zeros(8), group_size=4, **kwargs)


# ---- torch ----------------------------------------------------------------------------------------


def test_torch_eager_op_and_compile_agree():
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=22)
    r, lp, m = torch.tensor(rewards), torch.tensor(np.nan_to_num(token_logp)), torch.tensor(mask)
    eager = fairkernels.group_advantages(r, group_size=5, token_logp=lp, mask=m, beta_rank=0.25, pass_k=3)
    expected, _ = reference_group_advantages(rewards, group_size=5, token_logp=np.nan_to_num(token_logp), mask=mask,
                                             beta_rank=0.25, pass_k=3)
    np.testing.assert_allclose(eager.numpy(), expected, rtol=1e-11, atol=1e-11)

    def advantages(rewards, token_logp, mask):
        return fairkernels.group_advantages(rewards, group_size=5, token_logp=token_logp, mask=mask,
                                            beta_rank=0.25, pass_k=3)

    compiled = torch.compile(advantages, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(r, lp, m), eager)
    args = (r, 5, None, torch.tensor(seq_logp), None, m, "mean", 0.25, "average", "mean", "group", True, 1e-6,
            "zero", 3, 0.0, "missing", "sum_then_normalize", None)
    torch.library.opcheck(torch.ops.fairkernels.group_advantages.default, args)


# ---- CUDA (skipped without a GPU) ---------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("k", [1, 3, 100])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("grouping", ["fixed", "ragged"])
def test_cuda_matches_cpu(k, scale, grouping):
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=23)
    kwargs = (dict(group_size=5) if grouping == "fixed"
              else dict(group_ids=torch.tensor(ragged_ids(np.random.default_rng(1), 30))))
    options = dict(seq_logp=torch.tensor(seq_logp), beta_rank=0.25, pass_k=k, scale=scale, mask=torch.tensor(mask),
                   return_signal=True, **kwargs)
    cpu, cpu_signal = fairkernels.group_advantages(torch.tensor(rewards), **options)
    on_gpu = {k_: (v.cuda() if isinstance(v, torch.Tensor) else v) for k_, v in options.items()}
    gpu, gpu_signal = fairkernels.group_advantages(torch.tensor(rewards).cuda(), **on_gpu)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
    assert torch.equal(gpu_signal.cpu(), cpu_signal)


@pytest.mark.cuda
def test_cuda_large_group():
    rng = np.random.default_rng(0)
    rewards = torch.tensor(rng.integers(0, 5, 10_000) / 4.0)
    cpu = fairkernels.group_advantages(rewards, group_size=10_000, pass_k=512)
    gpu = fairkernels.group_advantages(rewards.cuda(), group_size=10_000, pass_k=512)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-12)
