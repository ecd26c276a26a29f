"""Several rewards per sample (rewards [N, R], reward_weights [R], multi_reward) against TRL
1.16.0's own code and a numpy reimplementation of it; the signal tolerance (signal_tol); NaN
rewards that propagate (nan_rewards="propagate")."""

from __future__ import annotations

import inspect
import itertools
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fairkernels
from advantage_reference import reference_group_advantages, trl_multi_reward_advantages, verl_loop_advantages
from test_advantage import awkward_batch, ragged_ids

MODES = ("sum_then_normalize", "normalize_then_sum")


def multi_reward_batch(seed, n_groups=8, group_size=6, n_rewards=3):
    """Graded rewards with NaN entries, unscorable rows (all R NaN), a group with one scorable
    row, a column missing from a whole group and an all-NaN group."""
    rng = np.random.default_rng(seed)
    n = n_groups * group_size
    r = rng.choice([0.0, 1.0, 0.5, -1.0, 2.0], size=(n, n_rewards)) + rng.normal(0, 0.01, size=(n, n_rewards))
    r[rng.random((n, n_rewards)) < 0.15] = np.nan
    r[3] = np.nan  # unscorable
    r[group_size:2 * group_size] = np.nan
    r[group_size + 2] = [1.0] + [np.nan] * (n_rewards - 1)  # the group's only scorable row
    r[2 * group_size:3 * group_size, n_rewards - 1] = np.nan  # one reward absent from a group
    r[3 * group_size:4 * group_size] = np.nan  # all-NaN group
    weights = rng.uniform(0.2, 2.0, size=n_rewards)
    return r, weights


# ---- TRL's own code ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trl_code():
    """The statements of TRL 1.16.0's GRPOTrainer._generate_and_score_completions that turn
    rewards_per_func into advantages (from `unscorable_mask = ...` to `nan_to_num`), read from
    the installed trl and run as they are: the trainer's own code path, without a model."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    import trl

    if trl.__version__ != "1.16.0":
        pytest.skip(f"written against trl 1.16.0, found {trl.__version__}")
    source = inspect.getsource(grpo.GRPOTrainer._generate_and_score_completions)
    first = source.rindex("\n", 0, source.index("unscorable_mask = torch.isnan(rewards_per_func)")) + 1
    last = source.index("advantages = torch.nan_to_num(advantages, nan=0.0)")
    last = source.index("\n", last)
    return compile(textwrap.dedent(source[first:last]), grpo.__file__, "exec"), grpo.nanstd


def run_trl(trl_code, rewards_per_func, weights, num_generations, aggregation, scale_rewards):
    code, nanstd = trl_code
    trainer = SimpleNamespace(multi_objective_aggregation=aggregation, scale_rewards=scale_rewards,
                              reward_weights=weights, reward_funcs=[None] * rewards_per_func.shape[1])
    namespace = dict(torch=torch, nanstd=nanstd, self=trainer, rewards_per_func=rewards_per_func,
                     num_generations=num_generations, device=rewards_per_func.device)
    exec(code, namespace)
    return namespace["advantages"]


@pytest.mark.parametrize("mode,scale", [(m, s) for m in MODES for s in ("group", "batch", "none")
                                        if m == "sum_then_normalize" or s == "group"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reimplementation_equals_trls_code(trl_code, mode, scale, seed):
    r, w = multi_reward_batch(seed)
    trl = run_trl(trl_code, torch.tensor(r), torch.tensor(w), 6, mode, scale).numpy()
    np.testing.assert_allclose(trl_multi_reward_advantages(r, w, 6, mode, scale), trl, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode,scale", [(m, s) for m in MODES for s in ("group", "batch", "none")
                                        if m == "sum_then_normalize" or s == "group"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_trls_code(trl_code, mode, scale, dtype, seed):
    r, w = multi_reward_batch(seed)
    rt, wt = torch.tensor(r, dtype=dtype), torch.tensor(w, dtype=dtype)
    trl = run_trl(trl_code, rt, wt, 6, mode, scale)
    options = dict(scale=scale) if mode == "sum_then_normalize" else {}
    got = fairkernels.group_advantages(rt, group_size=6, reward_weights=wt, multi_reward=mode, eps=1e-4, **options)
    assert got.dtype == dtype and got.shape == (len(r),)
    # TRL's nanstd rounds its Bessel factor to float32 (see trl_multi_reward_advantages): 3e-8
    # relative in float64; in float32 TRL also sums and divides in float32.
    tol = 2e-7 if dtype == torch.float64 else 5e-4
    torch.testing.assert_close(got, trl, rtol=tol, atol=tol)


# ---- the kernel against the reimplementation (runs without trl) -------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_reimplementation(mode, seed):
    r, w = multi_reward_batch(seed, n_rewards=1 + seed)
    got = fairkernels.group_advantages(r, group_size=6, reward_weights=w, multi_reward=mode, eps=1e-4)
    # 2e-7: TRL's float32 Bessel factor (trl_multi_reward_advantages), which the kernel does not copy
    np.testing.assert_allclose(got, trl_multi_reward_advantages(r, w, 6, mode), rtol=2e-7, atol=2e-7)


def test_sum_then_normalize_is_the_plain_call_on_the_weighted_sum():
    r, w = multi_reward_batch(5)
    s = np.nansum(r * w, axis=1)
    s[np.isnan(r).all(axis=1)] = np.nan
    seq_logp = np.random.default_rng(0).normal(size=len(r))
    for options in (dict(), dict(seq_logp=seq_logp, beta_rank=0.25, pass_k=3), dict(baseline="loo", scale="batch")):
        got = fairkernels.group_advantages(r, group_size=6, reward_weights=w, **options)
        np.testing.assert_array_equal(got, fairkernels.group_advantages(s, group_size=6, **options))


@pytest.mark.parametrize("mode", MODES)
def test_ragged_groups_equal_fixed_groups_in_another_row_order(mode):
    r, w = multi_reward_batch(6)
    perm = np.random.default_rng(0).permutation(len(r))
    ids = np.repeat(np.arange(8) * 1000 + 7, 6)
    fixed, fixed_signal = fairkernels.group_advantages(r, group_size=6, reward_weights=w, multi_reward=mode,
                                                       return_signal=True)
    ragged, ragged_signal = fairkernels.group_advantages(r[perm], group_ids=ids[perm], reward_weights=w,
                                                         multi_reward=mode, return_signal=True)
    np.testing.assert_allclose(ragged, fixed[perm], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ragged_signal, fixed_signal[perm])


@pytest.mark.parametrize("mode", MODES)
def test_token_broadcast_out_and_signal(mode):
    r, w = multi_reward_batch(7)
    mask = np.random.default_rng(1).random((len(r), 9)) < 0.7
    per_row, signal = fairkernels.group_advantages(r, group_size=6, reward_weights=w, multi_reward=mode,
                                                   return_signal=True)
    out = np.full((len(r), 9), 5.0)
    got = fairkernels.group_advantages(r, group_size=6, reward_weights=w, multi_reward=mode, mask=mask, out=out)
    assert got is out
    np.testing.assert_array_equal(out, per_row[:, None] * mask)
    # a group has signal when its combined rewards s (before the batch step) are not all equal
    assert not signal[6:12].any() and not signal[18:24].any() and signal.any()


def test_one_reward_column_and_default_weights():
    r, _ = multi_reward_batch(8, n_rewards=1)
    np.testing.assert_array_equal(fairkernels.group_advantages(r, group_size=6),
                                  fairkernels.group_advantages(r[:, 0], group_size=6))
    for mode in MODES:
        np.testing.assert_array_equal(
            fairkernels.group_advantages(r[:, 0], group_size=6, multi_reward=mode),
            fairkernels.group_advantages(r, group_size=6, reward_weights=np.ones(1), multi_reward=mode))
    r3, _ = multi_reward_batch(8)
    np.testing.assert_array_equal(fairkernels.group_advantages(r3, group_size=6),
                                  fairkernels.group_advantages(r3, group_size=6, reward_weights=np.ones(3)))


def test_inputs_are_not_modified():
    r, w = multi_reward_batch(9)
    copies = r.copy(), w.copy()
    for mode in MODES:
        fairkernels.group_advantages(r, group_size=6, reward_weights=w, multi_reward=mode)
    np.testing.assert_array_equal(r, copies[0])
    np.testing.assert_array_equal(w, copies[1])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(rewards=np.zeros(8), reward_weights=np.ones(1)), ValueError, "reward_weights needs rewards of shape"),
        (dict(reward_weights=np.ones(2)), ValueError, "reward_weights must have shape \\[3\\]"),
        (dict(reward_weights=np.ones(3, np.int64)), TypeError, "reward_weights must have"),
        (dict(reward_weights=[1.0, 1.0, 1.0]), TypeError, "lists, tuples and scalars are not converted"),
        (dict(multi_reward="mean"), ValueError, "multi_reward must be one of"),
        (dict(multi_reward="normalize_then_sum", beta_rank=0.1, seq_logp=np.zeros(8)), ValueError,
         "takes no beta_rank"),
        (dict(multi_reward="normalize_then_sum", pass_k=2), ValueError, "takes no pass_k"),
        (dict(multi_reward="normalize_then_sum", scale="batch"), ValueError, "takes no scale"),
        (dict(multi_reward="normalize_then_sum", baseline="loo"), ValueError, "takes no baseline"),
        (dict(multi_reward="normalize_then_sum", nan_rewards="propagate"), ValueError, "takes no nan_rewards"),
        (dict(rewards=np.zeros((8, 3), np.int64)), TypeError, "rewards must have"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"rewards": np.zeros((8, 3)), **kwargs}
    with pytest.raises(error, match=match):
        fairkernels.group_advantages(group_size=4, **kwargs)


def test_torch_op_fake_and_compile():
    r, w = multi_reward_batch(10)
    rt, wt = torch.tensor(r), torch.tensor(w)
    mask = torch.rand(len(r), 5, generator=torch.Generator().manual_seed(0)) < 0.5
    for mode in MODES:
        eager = fairkernels.group_advantages(rt, group_size=6, reward_weights=wt, multi_reward=mode, mask=mask)

        def advantages(rewards, weights, mask, mode=mode):
            return fairkernels.group_advantages(rewards, group_size=6, reward_weights=weights, multi_reward=mode,
                                                mask=mask)

        compiled = torch.compile(advantages, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(rt, wt, mask), eager)
        args = (rt, 6, None, None, None, mask, "mean", 0.0, "average", "mean", "group", True, 1e-6, "zero", None,
                0.0, "missing", mode, wt)
        torch.library.opcheck(torch.ops.fairkernels.group_advantages.default, args)


# ---- signal_tol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tol", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("grouping", ["fixed", "ragged"])
def test_signal_tol_flags_groups_by_their_reward_std(tol, unbiased, grouping):
    rewards, seq_logp, _, _ = awkward_batch(seed=30)
    rewards[20:25] = [0.5, 0.52, 0.5, 0.51, np.nan]  # a nearly constant group
    kwargs = dict(group_size=5) if grouping == "fixed" else dict(group_ids=ragged_ids(np.random.default_rng(1), 30))
    got, signal = fairkernels.group_advantages(rewards, seq_logp=seq_logp, beta_rank=0.25, unbiased=unbiased,
                                               signal_tol=tol, return_signal=True, **kwargs)
    expected, expected_signal = reference_group_advantages(rewards, seq_logp=seq_logp, beta_rank=0.25,
                                                           unbiased=unbiased, signal_tol=tol, **kwargs)
    np.testing.assert_array_equal(signal, expected_signal)
    # the tolerance only changes the flags: advantages are those of signal_tol = 0
    np.testing.assert_array_equal(got, fairkernels.group_advantages(rewards, seq_logp=seq_logp, beta_rank=0.25,
                                                                    unbiased=unbiased, **kwargs))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_signal_tol_zero_is_not_all_equal_and_errors():
    rewards = np.array([1.0, 1.0, 1.0, 1.0, 1.0 + 2**-40, 1.0])
    _, signal = fairkernels.group_advantages(rewards, group_size=3, return_signal=True)
    np.testing.assert_array_equal(signal, [False] * 3 + [True] * 3)
    _, signal = fairkernels.group_advantages(rewards, group_size=3, return_signal=True, signal_tol=1e-9)
    assert not signal.any()
    for value, error in ((-1.0, ValueError), (float("nan"), ValueError), ("0", TypeError)):
        with pytest.raises(error, match="signal_tol must be"):
            fairkernels.group_advantages(rewards, group_size=3, signal_tol=value)


# ---- nan_rewards="propagate" ----------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("grouping", ["fixed", "ragged"])
def test_propagating_nan_rewards_matches_the_reference(scale, grouping):
    rewards, seq_logp, _, mask = awkward_batch(seed=31)
    kwargs = dict(group_size=5) if grouping == "fixed" else dict(group_ids=ragged_ids(np.random.default_rng(1), 30))
    got, signal = fairkernels.group_advantages(rewards, nan_rewards="propagate", scale=scale, mask=mask,
                                               return_signal=True, **kwargs)
    expected, expected_signal = reference_group_advantages(rewards, nan_rewards="propagate", scale=scale, mask=mask,
                                                           **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(signal, expected_signal)
    assert np.isnan(got).any()


def test_propagating_nan_rewards_is_verls_loop():
    rng = np.random.default_rng(3)
    index = rng.permutation(np.array([0] * 12 + [1] * 9 + [2] * 1 + [3] * 17 + [4] * 1))
    scores = rng.choice([0.0, 1.0, 0.3], size=len(index))
    scores[np.flatnonzero(index == 1)[2]] = np.nan
    scores[index == 4] = np.nan  # a NaN singleton
    mask = (rng.random((len(index), 7)) < 0.8).astype(np.float64)
    got = fairkernels.group_advantages(scores, group_ids=index, mask=mask, singleton="raw", nan_rewards="propagate")
    np.testing.assert_allclose(got, verl_loop_advantages(scores, index, mask), rtol=1e-12, atol=1e-12,
                               equal_nan=True)


# ---- CUDA (skipped without a GPU) -------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("grouping", ["fixed", "ragged"])
def test_cuda_matches_cpu(mode, grouping):
    r, w = multi_reward_batch(11)
    kwargs = (dict(group_size=6) if grouping == "fixed"
              else dict(group_ids=torch.tensor(ragged_ids(np.random.default_rng(1), len(r)))))
    options = dict(reward_weights=torch.tensor(w), multi_reward=mode, signal_tol=0.1, return_signal=True, **kwargs)
    cpu, cpu_signal = fairkernels.group_advantages(torch.tensor(r), **options)
    on_gpu = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in options.items()}
    gpu, gpu_signal = fairkernels.group_advantages(torch.tensor(r).cuda(), **on_gpu)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
    assert torch.equal(gpu_signal.cpu(), cpu_signal)


@pytest.mark.cuda
@pytest.mark.parametrize("scale,nan_rewards",
                         list(itertools.product(["group", "batch", "none"], ["missing", "propagate"])))
def test_cuda_signal_tol_and_nan_rewards_match_cpu(scale, nan_rewards):
    rewards, seq_logp, _, _ = awkward_batch(seed=32)
    options = dict(group_size=5, scale=scale, nan_rewards=nan_rewards, signal_tol=0.2, return_signal=True)
    cpu, cpu_signal = fairkernels.group_advantages(torch.tensor(rewards), **options)
    gpu, gpu_signal = fairkernels.group_advantages(torch.tensor(rewards).cuda(), **options)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.equal(gpu_signal.cpu(), cpu_signal)


def test_empty_and_all_nan_batches():
    for mode in MODES:
        assert fairkernels.group_advantages(np.zeros((0, 3)), group_size=4, multi_reward=mode).shape == (0,)
        got = fairkernels.group_advantages(np.zeros((0, 3)), group_ids=np.zeros(0, np.int64), multi_reward=mode,
                                           mask=np.zeros((0, 5), bool))
        assert got.shape == (0, 5)
        all_nan, signal = fairkernels.group_advantages(np.full((4, 2), np.nan), group_size=2, multi_reward=mode,
                                                       return_signal=True)
        np.testing.assert_array_equal(all_nan, np.zeros(4))
        assert not signal.any()
    assert fairkernels.group_advantages(np.zeros(0), group_size=4, pass_k=3).shape == (0,)
