"""fairkernels.group_advantages against the numpy reference, the public references (TRL,
verl, the authors' rank code), the awkward cases, invariants (hypothesis), torch interop
(custom op, torch.compile, out=) and, where a GPU is present, CUDA against the CPU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import fairkernels
from advantage_reference import (
    authors_rank_scores,
    reference_group_advantages,
    trl_advantages,
    verl_loop_advantages,
)

SOURCES = ("none", "seq", "token_mean", "token_sum")


def awkward_batch(seed: int, n_groups: int = 6, group_size: int = 5, n_tokens: int = 7):
    """Binary and graded rewards with NaNs, duplicate likelihoods (ties), an all-equal group,
    an all-NaN group, empty mask rows and NaN padding under the mask."""
    rng = np.random.default_rng(seed)
    n = n_groups * group_size
    rewards = rng.choice([0.0, 1.0, 0.5, 2.0], size=n)
    rewards[rng.random(n) < 0.1] = np.nan
    rewards[group_size : 2 * group_size] = 1.0  # all equal
    rewards[2 * group_size : 3 * group_size] = np.nan  # all NaN
    token_logp = rng.normal(-1.0, 0.5, size=(n, n_tokens))
    mask = rng.random((n, n_tokens)) < 0.7
    mask[3] = False  # empty response
    token_logp[~mask] = np.nan  # padding is never read
    token_logp[7] = np.where(mask[7], 0.0, np.nan)
    token_logp[8], mask[8] = token_logp[6].copy(), mask[6].copy()  # exact tie in a group
    seq_logp = rng.normal(size=n)
    seq_logp[9] = seq_logp[5]  # tie
    return rewards, seq_logp, token_logp, mask


def ragged_ids(rng, n):
    """Unsorted, non-contiguous ids with groups of very different sizes (1 up to n/2)."""
    sizes = [1, 1, 2, n // 2]
    sizes.append(n - sum(sizes))
    ids = np.concatenate([np.full(s, v) for s, v in zip(sizes, [907, -3, 10**12, 42, 5])])
    return rng.permutation(ids)


def call_both(rewards, seq_logp, token_logp, mask, source, grouping, dtype, **options):
    rng = np.random.default_rng(1)
    kwargs = dict(group_size=5) if grouping == "fixed" else dict(group_ids=ragged_ids(rng, len(rewards)))
    if source == "seq":
        kwargs.update(seq_logp=seq_logp.astype(dtype))
    elif source.startswith("token"):
        kwargs.update(token_logp=token_logp.astype(dtype), mask=mask, likelihood=source.split("_")[1])
    beta = 0.0 if source == "none" else 0.25
    got, signal = fairkernels.group_advantages(
        rewards.astype(dtype), beta_rank=beta, return_signal=True, **kwargs, **options
    )
    ref_kwargs = {k: v for k, v in kwargs.items()}
    expected, expected_signal = reference_group_advantages(rewards, beta_rank=beta, **ref_kwargs, **options)
    return got, expected, signal, expected_signal


@pytest.mark.parametrize(
    "source,ties,baseline,scale,singleton,grouping",
    list(
        itertools.product(
            SOURCES,
            ("average", "first"),
            ("mean", "loo"),
            ("group", "batch", "none"),
            ("zero", "raw"),
            ("fixed", "ragged"),
        )
    ),
)
def test_matches_reference_over_the_grid(source, ties, baseline, scale, singleton, grouping):
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=len(source) + len(scale))
    for dtype, unbiased in itertools.product((np.float64, np.float32), (True, False)):
        got, expected, signal, expected_signal = call_both(
            rewards,
            seq_logp,
            token_logp,
            mask,
            source,
            grouping,
            dtype,
            ties=ties,
            baseline=baseline,
            scale=scale,
            singleton=singleton,
            unbiased=unbiased,
        )
        assert got.dtype == dtype and got.shape == expected.shape
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        np.testing.assert_array_equal(signal, expected_signal)


def test_token_level_output_is_sequence_advantage_times_mask():
    rewards, _, token_logp, mask = awkward_batch(seed=3)
    seq = fairkernels.group_advantages(rewards, group_size=5, token_logp=token_logp[:, :0], mask=mask[:, :0])
    assert seq.shape == (30, 0)
    per_row = fairkernels.group_advantages(rewards, group_size=5)
    tokens = fairkernels.group_advantages(rewards, group_size=5, mask=mask)
    np.testing.assert_array_equal(tokens, per_row[:, None] * mask)


# ---- the public references ---------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_trl(scale):
    rng = np.random.default_rng(0)
    rewards = rng.choice([0.0, 1.0], size=64 * 8) + rng.normal(0, 0.01, size=64 * 8)
    got = fairkernels.group_advantages(rewards, group_size=8, scale=scale, eps=1e-4)
    np.testing.assert_allclose(got, trl_advantages(rewards, 8, scale=scale), rtol=1e-12, atol=1e-12)


def test_matches_verl_loop_with_singletons_and_token_mask():
    rng = np.random.default_rng(1)
    n = 40
    index = rng.permutation(np.array([0] * 12 + [1] * 9 + [2] * 1 + [3] * 17 + [4] * 1))
    scores = rng.choice([0.0, 1.0, 0.3], size=n)
    scores[index == 3] = 1.0  # std 0 group: (r - mean) / (0 + eps) = 0
    mask = (rng.random((n, 11)) < 0.8).astype(np.float64)
    got = fairkernels.group_advantages(scores, group_ids=index, mask=mask, singleton="raw", eps=1e-6)
    np.testing.assert_allclose(got, verl_loop_advantages(scores, index, mask), rtol=1e-12, atol=1e-12)


def test_matches_authors_rank_code_with_distinct_likelihoods():
    rng = np.random.default_rng(2)
    G, n = 16, 16 * 32
    scores = rng.choice([0.0, 1.0], size=n)
    mean_logp = rng.normal(size=n)
    reweighted = authors_rank_scores(scores, mean_logp, G, beta=0.25)
    index = np.repeat(np.arange(n // G), G)
    expected = verl_loop_advantages(reweighted, index, np.ones((n, 1)))[:, 0]
    for ties in ("average", "first"):
        got = fairkernels.group_advantages(scores, group_size=G, seq_logp=mean_logp, beta_rank=0.25, ties=ties)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# ---- awkward cases ---------------------------------------------------------------------------


def test_empty_batch():
    for kwargs in (dict(group_size=4), dict(group_ids=np.zeros(0, dtype=np.int64))):
        assert fairkernels.group_advantages(np.zeros(0), **kwargs).shape == (0,)
        got = fairkernels.group_advantages(np.zeros(0), mask=np.zeros((0, 5), bool), **kwargs)
        assert got.shape == (0, 5)


def test_groups_of_one_all_equal_all_nan():
    rewards = np.array([3.0, 1.0, 1.0, 1.0, np.nan, np.nan, 2.0, np.nan])
    ids = np.array([0, 1, 1, 1, 2, 2, 3, 3])
    got, signal = fairkernels.group_advantages(rewards, group_ids=ids, return_signal=True)
    np.testing.assert_array_equal(got, np.zeros(8))
    assert not signal.any()
    raw = fairkernels.group_advantages(rewards, group_ids=ids, singleton="raw")
    np.testing.assert_allclose(raw, [3 / (1 + 1e-6), 0, 0, 0, 0, 0, 2 / (1 + 1e-6), 0])


def test_nan_reward_is_the_same_as_an_absent_row():
    rewards = np.array([1.0, 0.0, np.nan, 1.0, 0.5, 0.0])
    logp = np.array([-1.0, -2.0, -0.5, -3.0, -1.5, -0.1])
    with_nan = fairkernels.group_advantages(rewards, group_size=6, seq_logp=logp, beta_rank=0.5)
    keep = ~np.isnan(rewards)
    without = fairkernels.group_advantages(rewards[keep], group_size=5, seq_logp=logp[keep], beta_rank=0.5)
    assert with_nan[2] == 0.0
    np.testing.assert_allclose(with_nan[keep], without, rtol=1e-15)


def test_ties_in_likelihood_get_equal_rewards_and_deterministic_ranks():
    rewards = np.ones(4)
    rewards[3] = 0.0
    logp = np.array([-1.0, -1.0, -2.0, -0.5])
    avg = fairkernels.group_advantages(rewards, group_size=4, seq_logp=logp, beta_rank=1.0, scale="none")
    assert avg[0] == avg[1]  # same likelihood, same reward
    first = fairkernels.group_advantages(rewards, group_size=4, seq_logp=logp, beta_rank=1.0, scale="none")
    again = fairkernels.group_advantages(rewards, group_size=4, seq_logp=logp, beta_rank=1.0, scale="none")
    np.testing.assert_array_equal(first, again)
    first = fairkernels.group_advantages(
        rewards, group_size=4, seq_logp=logp, beta_rank=1.0, ties="first", scale="none"
    )
    # ranks: row2 = 0, row0 = 1, row1 = 2 (lower row first), row3 = 3
    r_prime = np.array([1 - 1 / 4, 1 - 2 / 4, 1.0, 0.0])
    np.testing.assert_allclose(first, r_prime - r_prime.mean())


def test_nan_likelihood_poisons_only_its_group():
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    logp = np.array([-1.0, np.nan, -2.0, -1.0, -3.0, -2.0])
    got = fairkernels.group_advantages(rewards, group_size=3, seq_logp=logp, beta_rank=0.25)
    assert np.isnan(got[:3]).all() and np.isfinite(got[3:]).all()


def test_ragged_groups_of_very_different_sizes():
    rng = np.random.default_rng(4)
    sizes = [1, 2, 3, 500, 70, 1, 2000]
    ids = rng.permutation(np.repeat(rng.choice(10**15, size=len(sizes), replace=False), sizes))
    rewards = rng.random(len(ids))
    logp = rng.normal(size=len(ids))
    got = fairkernels.group_advantages(rewards, group_ids=ids, seq_logp=logp, beta_rank=0.25)
    expected, _ = reference_group_advantages(rewards, group_ids=ids, seq_logp=logp, beta_rank=0.25)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_mixed_dtype_inputs():
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=5)
    wide_logp = np.zeros((30, 20))
    wide_logp[:, 3:10] = token_logp  # row-strided view
    strided_rewards = np.repeat(rewards, 2)[::2]  # element stride 2
    float_mask = np.asfortranarray(mask.astype(np.float32))  # column-major: copied once
    got = fairkernels.group_advantages(
        strided_rewards.astype(np.float32),
        group_size=5,
        token_logp=wide_logp[:, 3:10],
        mask=float_mask,
        beta_rank=0.25,
    )
    expected, _ = reference_group_advantages(rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    ids32 = np.repeat(np.arange(6, dtype=np.int32), 5)[::-1]
    np.testing.assert_allclose(
        fairkernels.group_advantages(rewards, group_ids=ids32, seq_logp=seq_logp.astype(np.float32), beta_rank=0.25),
        reference_group_advantages(rewards, group_size=5, seq_logp=seq_logp.astype(np.float32), beta_rank=0.25)[0],
        rtol=1e-12,
        atol=1e-12,
    )


def test_inputs_are_not_modified():
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=6)
    copies = [a.copy() for a in (rewards, seq_logp, token_logp, mask)]
    fairkernels.group_advantages(rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25)
    for before, after in zip(copies, (rewards, seq_logp, token_logp, mask)):
        np.testing.assert_array_equal(before, after)


def test_out_buffer_is_written_and_returned():
    rewards, _, token_logp, mask = awkward_batch(seed=7)
    buffer = np.full((30, 12), 7.0)
    view = buffer[:, 2:9]
    got = fairkernels.group_advantages(
        rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25, out=view
    )
    assert got is view
    expected, _ = reference_group_advantages(rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25)
    np.testing.assert_allclose(view, expected, rtol=1e-12, atol=1e-12)
    assert (buffer[:, :2] == 7).all() and (buffer[:, 9:] == 7).all()


def test_bit_identical_whatever_the_thread_count(monkeypatch):
    import subprocess
    import sys

    code = (
        "import numpy as np, fairkernels;"
        "rng=np.random.default_rng(0); r=rng.random(4096*16); lp=rng.normal(size=(4096*16, 33)).astype(np.float32);"
        "m=rng.random(lp.shape)<0.8;"
        "a=fairkernels.group_advantages(r.astype(np.float32), group_ids=rng.integers(0,3000,len(r)), token_logp=lp,"
        " mask=m, beta_rank=0.25, scale='batch');"
        "print(a.tobytes().hex()[:0] or __import__('hashlib').sha256(a.tobytes()).hexdigest())"
    )
    digests = {
        threads: subprocess.run(
            [sys.executable, "-c", code],
            env={**__import__("os").environ, "OMP_NUM_THREADS": threads},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for threads in ("1", "2", "3")
    }
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(), ValueError, "exactly one of group_size and group_ids"),
        (dict(group_size=4, group_ids=np.zeros(8, int)), ValueError, "exactly one"),
        (dict(group_size=3), ValueError, "does not divide"),
        (dict(group_size=0), ValueError, "group_size must be >= 1"),
        (dict(group_size=2.0), TypeError, "group_size must be an int"),
        (dict(group_ids=np.zeros(7, int)), ValueError, "group_ids must have shape"),
        (dict(group_ids=np.zeros(8)), TypeError, "group_ids must have an integer dtype"),
        (dict(group_size=4, beta_rank=0.25), ValueError, "needs seq_logp or token_logp"),
        (dict(group_size=4, token_logp=np.zeros((8, 3))), ValueError, "token_logp needs mask"),
        (dict(group_size=4, token_logp=np.zeros((8, 3)), mask=np.ones((8, 4), bool)), ValueError, "mask must have"),
        (dict(group_size=4, mask=np.ones((7, 4), bool)), ValueError, "mask must have shape \\["),
        (
            dict(group_size=4, seq_logp=np.zeros(8), token_logp=np.zeros((8, 2)), mask=np.ones((8, 2))),
            ValueError,
            "at most one",
        ),
        (dict(group_size=4, scale="std"), ValueError, "scale must be one of"),
        (dict(group_size=4, ties="dense"), ValueError, "ties must be one of"),
        (dict(group_size=4, baseline="median"), ValueError, "baseline must be one of"),
        (dict(group_size=4, singleton="drop"), ValueError, "singleton must be one of"),
        (dict(group_size=4, likelihood="max"), ValueError, "likelihood must be one of"),
        (dict(group_size=4, eps=-1.0), ValueError, "eps must be finite and >= 0"),
        (dict(group_size=4, beta_rank=float("nan")), ValueError, "beta_rank must be finite"),
        (dict(group_size=4, unbiased=1), TypeError, "unbiased must be a bool"),
        (dict(group_size=4, out=np.zeros(8, np.float32)), ValueError, "out must have shape"),
        (dict(group_size=4, seq_logp=np.zeros(8, np.int64), beta_rank=0.1), TypeError, "seq_logp must have a float"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        fairkernels.group_advantages(np.zeros(8), **kwargs)


def test_bad_rewards():
    with pytest.raises(ValueError, match="rewards must be 1-D \\[N\\] or 2-D \\[N, R\\]"):
        fairkernels.group_advantages(np.zeros((2, 4, 1)), group_size=2)
    with pytest.raises(ValueError, match="needs R >= 1"):
        fairkernels.group_advantages(np.zeros((4, 0)), group_size=2)
    with pytest.raises(TypeError, match="rewards must have dtype"):
        fairkernels.group_advantages(np.zeros(4, np.int64), group_size=2)
    with pytest.raises(TypeError, match="rewards must have dtype"):
        fairkernels.group_advantages(np.zeros(4, np.float16), group_size=2)
    with pytest.raises(TypeError, match="rewards must be a numpy array"):
        fairkernels.group_advantages([1.0, 0.0], group_size=2)


# ---- torch -----------------------------------------------------------------------------------


def test_torch_tensors_in_torch_tensors_out():
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=8)
    r = torch.tensor(rewards, dtype=torch.float32)
    lp = torch.tensor(token_logp, dtype=torch.float32, requires_grad=True)
    m = torch.tensor(mask)
    got, signal = fairkernels.group_advantages(
        r, group_size=5, token_logp=lp, mask=m, beta_rank=0.25, return_signal=True
    )
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (30, 7)
    assert signal.dtype == torch.bool and not got.requires_grad
    expected, expected_signal = reference_group_advantages(
        rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(signal.numpy(), expected_signal)


def test_torch_out_buffer_reused():
    rewards, _, _, mask = awkward_batch(seed=9)
    r, m = torch.tensor(rewards), torch.tensor(mask)
    out = torch.empty(30, 7, dtype=torch.float64)
    got = fairkernels.group_advantages(r, group_size=5, mask=m, out=out)
    assert got.data_ptr() == out.data_ptr()
    np.testing.assert_allclose(out.numpy(), reference_group_advantages(rewards, group_size=5, mask=mask)[0], rtol=1e-12)


def test_torch_compile_fullgraph():
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=10)
    r = torch.tensor(rewards, dtype=torch.float32)
    lp = torch.tensor(np.nan_to_num(token_logp), dtype=torch.float32)
    m = torch.tensor(mask)

    def policy_loss(rewards, token_logp, mask):
        adv = fairkernels.group_advantages(rewards, group_size=5, token_logp=token_logp, mask=mask, beta_rank=0.25)
        return -(adv * token_logp).sum() / mask.sum()

    compiled = torch.compile(policy_loss, fullgraph=True, backend="aot_eager")  # fake impl used
    torch.testing.assert_close(compiled(r, lp, m), policy_loss(r, lp, m))


def test_torch_opcheck():
    rewards, seq_logp, _, mask = awkward_batch(seed=11)
    args = (
        torch.tensor(rewards),
        5,
        None,
        torch.tensor(seq_logp),
        None,
        torch.tensor(mask),
        "mean",
        0.25,
        "average",
        "mean",
        "group",
        True,
        1e-6,
        "zero",
        None,
        0.0,
        "missing",
        "sum_then_normalize",
        None,
    )
    torch.library.opcheck(torch.ops.fairkernels.group_advantages.default, args)


def test_torch_mixed_devices_are_rejected():
    with pytest.raises(ValueError, match="seq_logp is a numpy"):
        fairkernels.group_advantages(torch.zeros(4), group_size=2, seq_logp=np.zeros(4), beta_rank=0.1)


# ---- CUDA (skipped without a GPU) -------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "source,scale,baseline,singleton,ties,grouping",
    list(
        itertools.product(
            SOURCES,
            ("group", "batch", "none"),
            ("mean", "loo"),
            ("zero", "raw"),
            ("average", "first"),
            ("fixed", "ragged"),
        )
    ),
)
def test_cuda_matches_cpu(dtype, source, scale, baseline, singleton, ties, grouping):
    rewards, seq_logp, token_logp, mask = awkward_batch(seed=12)
    rng = np.random.default_rng(1)
    kwargs = dict(group_size=5) if grouping == "fixed" else dict(group_ids=torch.tensor(ragged_ids(rng, 30)))
    if source == "seq":
        kwargs["seq_logp"] = torch.tensor(seq_logp, dtype=dtype)
    elif source.startswith("token"):
        kwargs.update(
            token_logp=torch.tensor(token_logp, dtype=dtype), mask=torch.tensor(mask), likelihood=source.split("_")[1]
        )
    options = dict(
        beta_rank=0.0 if source == "none" else 0.25,
        scale=scale,
        baseline=baseline,
        singleton=singleton,
        ties=ties,
        return_signal=True,
    )
    cpu, cpu_signal = fairkernels.group_advantages(torch.tensor(rewards, dtype=dtype), **kwargs, **options)
    gpu_kwargs = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    gpu, gpu_signal = fairkernels.group_advantages(torch.tensor(rewards, dtype=dtype).cuda(), **gpu_kwargs, **options)
    assert gpu.is_cuda and gpu.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol, equal_nan=True)
    assert torch.equal(gpu_signal.cpu(), cpu_signal)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs_accumulate_in_float32(dtype):
    rewards, _, token_logp, mask = awkward_batch(seed=13)
    r = torch.tensor(rewards, dtype=torch.float32)
    lp = torch.tensor(np.nan_to_num(token_logp), dtype=dtype)
    expected = fairkernels.group_advantages(
        r, group_size=5, token_logp=lp.float(), mask=torch.tensor(mask), beta_rank=0.25
    )
    got = fairkernels.group_advantages(
        r.to(dtype).cuda(), group_size=5, token_logp=lp.cuda(), mask=torch.tensor(mask).cuda(), beta_rank=0.25
    )
    assert got.dtype == dtype
    torch.testing.assert_close(got.float().cpu(), expected.to(dtype).float(), rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
def test_cuda_large_ragged_and_stream():
    g = torch.Generator().manual_seed(0)
    n = 65536
    ids = torch.randperm(n, generator=g) // 16
    r = (torch.rand(n, generator=g) > 0.5).float()
    lp = torch.randn(n, 64, generator=g)
    m = torch.rand(n, 64, generator=g) > 0.2
    cpu = fairkernels.group_advantages(r, group_ids=ids, token_logp=lp, mask=m, beta_rank=0.25)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        gpu = fairkernels.group_advantages(
            r.cuda(), group_ids=ids.cuda(), token_logp=lp.cuda(), mask=m.cuda(), beta_rank=0.25
        )
    stream.synchronize()
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    rewards, seq_logp, _, _ = awkward_batch(seed=14)
    got = fairkernels.group_advantages(
        cupy.asarray(rewards), group_size=5, seq_logp=cupy.asarray(seq_logp), beta_rank=0.25
    )
    assert isinstance(got, cupy.ndarray)
    expected = fairkernels.group_advantages(rewards, group_size=5, seq_logp=seq_logp, beta_rank=0.25)
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=1e-12, atol=1e-12)


def test_cuda_requested_without_gpu_is_a_clear_error():
    if fairkernels.cuda_available():
        pytest.skip("a GPU is present")
    from fairkernels._arrays import ArrayView
    from fairkernels._backend import kernels_for

    # What the dispatch layer sees for a CUDA array (none can be made on a machine without a GPU).
    on_gpu = ArrayView(None, "rewards", "cupy", "cuda", 0, "float32", (4,), (4,), 4, 0)
    with pytest.raises(fairkernels.CudaUnavailableError, match="rewards is on a CUDA device"):
        kernels_for(on_gpu)


def test_eager_torch_path_equals_the_custom_op():
    rewards, _, token_logp, mask = awkward_batch(seed=15)
    r, lp, m = torch.tensor(rewards), torch.tensor(np.nan_to_num(token_logp)), torch.tensor(mask)
    eager, eager_signal = fairkernels.group_advantages(
        r, group_size=5, token_logp=lp, mask=m, beta_rank=0.25, scale="batch", return_signal=True
    )
    op, op_signal = torch.ops.fairkernels.group_advantages(
        r, 5, None, None, lp, m, "mean", 0.25, "average", "mean", "batch", True, 1e-6, "zero", None, 0.0, "missing",
        "sum_then_normalize", None
    )
    assert torch.equal(eager, op) and torch.equal(eager_signal, op_signal)
