"""Numerical edge cases of the three kernel families, through their public APIs, against the
rules written down in the README ("Numerical edge cases") and in the numpy references:

* group_advantages: +-inf rewards, float64 statistics that overflow, eps = 0 with constant
  groups (0 / 0), a std that underflows;
* propensity_loss: denormal propensities with p_min = 0 (weights 1/p beyond the dtype), row
  terms, derivatives and sums beyond the dtype;
* bandits: weights whose float64 counts would overflow, exactness of the counts, the bound's
  log(2 K T / delta) beyond float64.

numpy and CPU torch run everywhere; the CUDA cases run where a GPU is present."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fairkernels
from advantage_reference import reference_group_advantages
from bandits_reference import ReferenceBounds
from fairkernels.bandits import GridBounds
from fairkernels.torch import CausalRMLoss
from propensity_reference import overflows, reference_loss

BACKENDS = ("numpy", "torch", pytest.param("cuda", marks=pytest.mark.cuda))


def _to_backend(x: np.ndarray, backend: str):
    if backend == "numpy":
        return x.copy()
    t = torch.from_numpy(x.copy())
    return t.cuda() if backend == "cuda" else t


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def advantages(backend: str, rewards: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    """group_advantages on a copy of ``rewards`` in ``backend``; checks the input is unmodified."""
    r = _to_backend(rewards, backend)
    if "group_ids" in options:
        options["group_ids"] = _to_backend(np.asarray(options["group_ids"], dtype=np.int64), backend)
    adv, signal = fairkernels.group_advantages(r, return_signal=True, **options)
    np.testing.assert_array_equal(_to_numpy(r), rewards)  # inputs are never modified
    return _to_numpy(adv).astype(np.float64), _to_numpy(signal)


def assert_matches_reference(got: np.ndarray, rewards: np.ndarray, dtype, **options) -> None:
    expected, _ = reference_group_advantages(rewards.astype(np.float64), **options)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, equal_nan=True)


# ---- group_advantages: infinite rewards ------------------------------------------------------

INF = np.inf
INFINITE_BATCH = np.array([
    1.0, INF, 0.0, 1.0,        # group 0: +inf among finite rewards        -> poisoned
    -INF, 0.0, np.nan, 1.0,    # group 1: -inf, and a row without reward  -> poisoned (NaN row keeps 0)
    INF, -INF, 1.0, 2.0,       # group 2: inf - inf                       -> poisoned
    INF, np.nan, np.nan, np.nan,  # group 3: a singleton +inf             -> poisoned, whatever `singleton`
    1.0, 2.0, 3.0, 4.0,        # group 4: healthy
    0.5, 0.5, np.nan, 0.5,     # group 5: constant                        -> exactly 0
    0.0, 1.0, 1.0, 0.0,        # group 6: healthy
])
POISONED_GROUPS = (0, 1, 2, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("baseline", ["mean", "loo"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("singleton", ["zero", "raw"])
def test_infinite_rewards_poison_their_group_only(backend, dtype, baseline, scale, singleton):
    rewards = INFINITE_BATCH.astype(dtype)
    options = dict(group_size=4, baseline=baseline, scale=scale, singleton=singleton)
    got, signal = advantages(backend, rewards, **options)
    assert_matches_reference(got, rewards, dtype, **options)
    rows = np.arange(rewards.size).reshape(-1, 4)
    poisoned = rows[list(POISONED_GROUPS)].ravel()
    rewarded = ~np.isnan(rewards)
    # The rule: every rewarded row of a group holding +-inf is NaN; rows without a reward keep 0.
    assert np.all(np.isnan(got[poisoned][rewarded[poisoned]]))
    assert np.all(got[~rewarded] == 0.0)
    # The other groups are untouched: the same numbers as with the poisoned groups left out
    # (for scale "batch": the poisoned groups stay out of the batch std).
    healthy = np.setdiff1d(np.arange(rewards.size), poisoned)
    without = rewards.copy()
    without[poisoned] = np.nan
    clean, _ = advantages(backend, without, **options)
    np.testing.assert_array_equal(got[healthy], clean[healthy])
    assert np.all(np.isfinite(got[healthy]))
    assert np.all(got[rows[5]] == 0.0)
    # Signal flags keep their definition (at least two rewarded rows, not all equal).
    assert signal.tolist() == [True] * 12 + [False] * 4 + [True] * 4 + [False] * 4 + [True] * 4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_infinite_rewards_with_ragged_groups_and_rank_reweighting(backend, scale):
    rewards = np.array([INF, 1.0, 0.0, 1.0, 1.0, 0.0, np.nan, 2.0, -INF])
    ids = np.array([7, 7, 3, 3, 3, 9, 9, 9, 5])
    seq_logp = np.array([-1.0, -2.0, -0.5, -0.7, -0.9, -3.0, -1.0, -2.0, -1.0])
    options = dict(group_ids=ids, seq_logp=seq_logp, beta_rank=0.25, scale=scale)
    got, _ = advantages(backend, rewards, **{**options, "seq_logp": _to_backend(seq_logp, backend)})
    assert_matches_reference(got, rewards, np.float64, **options)
    assert np.all(np.isnan(got[[0, 1, 8]]))  # groups 7 and the singleton 5
    assert np.all(np.isfinite(got[[2, 3, 4, 5, 7]])) and got[6] == 0.0


# ---- group_advantages: float64 statistics beyond float64 ----------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("baseline", ["mean", "loo"])
def test_overflowing_group_statistics_poison_the_group(backend, scale, baseline):
    rewards = np.array([
        1e308, 1e308, 0.0, 0.0,        # the group's sum overflows                  -> poisoned
        -1e200, 1e200, -1e200, 1e200,  # squared deviations overflow (mean 0 is fine) -> poisoned
        1.0, 2.0, 3.0, 4.0,            # healthy
    ])
    options = dict(group_size=4, scale=scale, baseline=baseline)
    got, _ = advantages(backend, rewards, **options)
    assert_matches_reference(got, rewards, np.float64, **options)
    assert np.all(np.isnan(got[:4]))
    if scale == "none":  # no std is taken: the centred values are exact
        expected = [-1e200, 1e200, -1e200, 1e200] if baseline == "mean" else [-4e200 / 3, 4e200 / 3] * 2
        np.testing.assert_allclose(got[4:8], expected, rtol=1e-15)
    else:
        assert np.all(np.isnan(got[4:8]))
    assert np.all(np.isfinite(got[8:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_std_beyond_float64_gives_nan_on_rewarded_rows(backend):
    # Each group is fine on its own (constant: m2 = 0); combined, the batch std overflows.
    rewards = np.array([1e200, 1e200, 1e200, -1e200, -1e200, -1e200, np.nan, 5.0, 6.0])
    got, _ = advantages(backend, rewards, group_size=3, scale="batch")
    assert_matches_reference(got, rewards, np.float64, group_size=3, scale="batch")
    assert got[6] == 0.0 and np.all(np.isnan(np.delete(got, 6)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_float32_rewards_at_the_float32_limit_are_finite(backend, scale):
    # float32 rewards are accumulated in float64, so even +-FLT_MAX cannot overflow a statistic.
    big = np.finfo(np.float32).max
    rewards = np.array([big, -big, 0.0, 1.0, big, big, big, 1.0], dtype=np.float32)
    got, _ = advantages(backend, rewards, group_size=4, scale=scale)
    assert_matches_reference(got, rewards, np.float32, group_size=4, scale=scale)
    assert np.all(np.isfinite(got))


# ---- group_advantages: eps = 0 and constant groups ------------------------------------------------

CONSTANT_BATCH = np.array([
    0.1, 0.1, 0.1,        # 3 * 0.1 / 3 != 0.1 in float64: a computed mean is off by one ulp
    0.7, 0.7, 0.7,
    1 / 3, 1 / 3, 1 / 3,
    2.0, 2.0, np.nan,     # constant among its rewarded rows
    np.nan, np.nan, np.nan,
    0.1, 0.2, 0.3,        # healthy
])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("baseline", ["mean", "loo"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_constant_groups_give_exactly_zero_for_any_eps(backend, dtype, eps, scale, baseline, unbiased):
    rewards = CONSTANT_BATCH.astype(dtype)
    options = dict(group_size=3, eps=eps, scale=scale, baseline=baseline, unbiased=unbiased)
    got, _ = advantages(backend, rewards, **options)
    assert np.all(np.isfinite(got))
    assert np.all(got[:15] == 0.0)  # exactly: not 1e-11, not 0/0, not +-0.8 (sign of the ulp error)
    assert_matches_reference(got, rewards, dtype, **options)
    assert np.all(got[15:] != 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("baseline", ["mean", "loo"])
def test_eps_zero_whole_batch_constant_gives_zero(backend, baseline):
    # scale "batch" with eps = 0: the batch std is 0, every centred value is 0, so is the result.
    rewards = np.array([0.1, 0.1, 0.1, 0.1, np.nan, 0.1])
    got, _ = advantages(backend, rewards, group_size=3, scale="batch", eps=0.0, baseline=baseline)
    assert np.all(got == 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_zero_std_underflow_counts_as_equal(backend):
    # Differences of 1e-170 square to 1e-340, below float64: the std is 0 and, with eps = 0, the
    # advantage is 0 (the documented rule), as in the reference; 1e-150 is still resolved.
    rewards = np.array([0.0, 1e-170, 0.0, 1e-170, 0.0, 1e-150, 0.0, 1e-150])
    got, _ = advantages(backend, rewards, group_size=4, eps=0.0)
    assert_matches_reference(got, rewards, np.float64, group_size=4, eps=0.0)
    assert np.all(got[:4] == 0.0)
    np.testing.assert_allclose(got[4:], [-math.sqrt(0.75), math.sqrt(0.75)] * 2, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constancy_is_judged_after_rank_reweighting(backend):
    # Equal rewards with different likelihoods are not constant once reweighted; zero rewards
    # stay zero under any reweighting.
    rewards = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    seq_logp = np.array([-1.0, -2.0, -3.0, -1.0, -2.0, -3.0])
    options = dict(group_size=3, beta_rank=0.25, eps=0.0)
    got, _ = advantages(backend, rewards, seq_logp=_to_backend(seq_logp, backend), **options)
    assert_matches_reference(got, rewards, np.float64, seq_logp=seq_logp, **options)
    np.testing.assert_allclose(got[:3], [-1.0, 0.0, 1.0], atol=1e-12)  # 1, 11/12, 5/6 reweighted: spread 1/12
    assert np.all(got[3:] == 0.0)


# ---- propensity_loss: weights and terms beyond the dtype ---------------------------------------

F32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # 1.4e-45: 1/p is inf in float32
F64_TINY = float(np.finfo(np.float64).smallest_subnormal)  # 4.9e-324: 1/p is inf in float64
F32_DENORMAL_OK = 3e-39  # a float32 denormal whose inverse (3.3e38) is still finite

# (name, dtype, logits, labels, propensity, options): rows observed unless said otherwise.
PROPENSITY_CASES = [
    ("f32 denormal p, p_min 0", np.float32, [0.5, -1.0], [1, 0], [F32_TINY, 0.5], {}),
    ("f32 denormal p, p_min 1e-6", np.float32, [0.5, -1.0], [1, 0], [F32_TINY, 0.5], {"p_min": 1e-6}),
    ("f64, the same p is normal", np.float64, [0.5, -1.0], [1, 0], [F32_TINY, 0.5], {}),
    ("f64 denormal p, p_min 0", np.float64, [0.5, -1.0], [1, 0], [F64_TINY, 0.5], {}),
    ("f32 finite 1/p, small loss", np.float32, [1.0, -1.0], [1, 0], [F32_DENORMAL_OK, 0.5], {}),
    ("f32 finite 1/p, loss > 1", np.float32, [-1.0, -1.0], [1, 0], [F32_DENORMAL_OK, 0.5], {}),
    ("f32 sum of ten 7e37 terms", np.float32, [0.0] * 10, [1] * 10, [1e-38] * 10, {}),
    ("f64 sum beyond float64", np.float64, [0.0] * 3, [1] * 3, [1e-308] * 3, {}),
    ("f32 noise-corrected: loss fine, gradient 5e38", np.float32, [0.1], [1], [1e-38],
     {"rho10": 0.45, "rho01": 0.45}),
    ("f32 unobserved denormal row", np.float32, [0.5, -1.0], [1, 0], [F32_TINY, 0.5], {"observed": [0, 1]}),
]


def _propensity_call(backend, dtype, logits, labels, propensity, observed, estimator, reduction, return_grad,
                     options):
    f, y, p = (_to_backend(np.asarray(v, dtype=dtype), backend) for v in (logits, labels, propensity))
    o = _to_backend(np.asarray(observed, dtype=dtype), backend)
    h = _to_backend(np.zeros(len(logits), dtype=dtype), backend) if estimator == "dr" else None
    return fairkernels.propensity_loss(f, y, o, p, h, estimator=estimator, reduction=reduction,
                                       return_grad=return_grad, **options)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("case", PROPENSITY_CASES, ids=[c[0] for c in PROPENSITY_CASES])
def test_propensity_overflow_is_an_error_or_the_reference(backend, estimator, reduction, return_grad, case):
    _, dtype, logits, labels, propensity, options = case
    options = {"p_min": 0.0, **options}
    observed = options.pop("observed", [1] * len(logits))
    imputed = np.zeros(len(logits)) if estimator == "dr" else None
    rule = dict(estimator=estimator, reduction=reduction, **options)
    expect_error = overflows(dtype, logits, labels, observed, propensity, imputed, return_grad=return_grad, **rule)
    call = (backend, dtype, logits, labels, propensity, observed, estimator, reduction, return_grad, options)
    if expect_error:
        with pytest.raises(ValueError, match="overflows the logits' dtype") as error:
            _propensity_call(*call)
        assert "p_min" in str(error.value)
        return
    result = _propensity_call(*call)
    loss, grad, _ = result if return_grad else (result, None, None)
    expected, expected_grad, _ = reference_loss(logits, labels, observed, propensity, imputed, **rule)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(_to_numpy(loss), expected, rtol=tol)
    assert np.all(np.isfinite(_to_numpy(loss)))
    if return_grad:
        np.testing.assert_allclose(_to_numpy(grad), expected_grad, rtol=tol, atol=1e-30)


def test_propensity_cases_cover_both_outcomes():
    """The table above exercises the error and the exact result, in both dtypes."""
    outcomes = set()
    for _, dtype, logits, labels, propensity, options in PROPENSITY_CASES:
        options = {"p_min": 0.0, **options}
        observed = options.pop("observed", [1] * len(logits))
        for return_grad in (False, True):
            outcomes.add((np.dtype(dtype).name, overflows(dtype, logits, labels, observed, propensity,
                                                          return_grad=return_grad, **options)))
    assert outcomes == {("float32", True), ("float32", False), ("float64", True), ("float64", False)}


def test_propensity_gradient_overflow_only_matters_when_asked():
    args = ([0.0], [1.0], [1.0], [1e-38])
    f, y, o, p = (np.array(v, dtype=np.float32) for v in args)
    options = dict(p_min=0.0, rho10=0.45, rho01=0.45, reduction="none")
    loss = fairkernels.propensity_loss(f, y, o, p, **options)
    assert np.isfinite(loss).all() and loss[0] > 1e37  # the row loss is representable
    with pytest.raises(ValueError, match="overflows"):
        fairkernels.propensity_loss(f, y, o, p, return_grad=True, **options)


def test_propensity_overflow_through_the_torch_module():
    f = torch.tensor([0.5, -1.0], requires_grad=True)
    y, o, p = torch.tensor([1.0, 0.0]), torch.ones(2), torch.tensor([F32_TINY, 0.5])
    with pytest.raises(ValueError, match="overflows"):
        CausalRMLoss(p_min=0.0)(f, y, o, p)
    loss = CausalRMLoss(p_min=1e-6)(f, y, o, p)  # the documented remedy
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()


@pytest.mark.cuda
def test_cuda_propensity_overflow_gives_nan():
    f, y, o, p = (torch.tensor(v, dtype=torch.float32, device="cuda") for v in ([0.5, -1.0], [1, 0], [1, 1],
                                                                                    [F32_TINY, 0.5]))
    assert torch.isnan(fairkernels.propensity_loss(f, y, o, p, p_min=0.0)).item()
    assert torch.isfinite(fairkernels.propensity_loss(f, y, o, p, p_min=1e-6)).item()


# ---- bandits: counts -----------------------------------------------------------------------------


def _state(g: GridBounds) -> dict[str, np.ndarray]:
    """The public views of the state; with the bernstein bound, the bounds read every array."""
    ucb, lcb = g.bounds()
    views = {"counts": g.counts, "means": g.means, "total": g.total, "ucb": ucb, "lcb": lcb}
    return {name: _to_numpy(v).copy() for name, v in views.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_that_would_overflow_the_counts_is_rejected(backend):
    like = None if backend == "numpy" else _to_backend(np.zeros(1), backend)
    g = GridBounds(2, 3, 1, bound="bernstein", like=like)
    ref = ReferenceBounds(2, 3, 1, bound="bernstein")
    arms, rewards, residuals = np.array([0, 1]), np.array([0.5, 0.25]), np.array([[0.1], [-0.2]])
    inputs = tuple(_to_backend(x, backend) for x in (arms, rewards, residuals))
    weight = np.array([1e308, 1.0])
    g.update(*inputs, weight=_to_backend(weight, backend))
    ref.update(arms, rewards, residuals, weight)
    before = _state(g)
    # The reference bounds after a huge (but representable) weight: finite, and the kernel's.
    ucb, lcb = (_to_numpy(b) for b in g.bounds())
    ref_ucb, ref_lcb = ref.bounds()
    np.testing.assert_allclose(ucb, ref_ucb, rtol=1e-12)
    np.testing.assert_allclose(lcb, ref_lcb, rtol=1e-12)
    assert np.isfinite(ucb[0, 0]) and before["means"][0, 0, 0] == 0.5  # (learner 1's w = 1: radius inf)
    # A second 1e308 on learner 0 would make its total inf: rejected, the state (learner 1's
    # valid observation included) left as it was, as the reference's rule says.
    with pytest.raises(ValueError, match="weight"):
        ref.update(arms, rewards, residuals, weight)
    with pytest.raises(ValueError, match=r"weight.*\(learner 0\)") as error:
        g.update(*inputs, weight=_to_backend(weight, backend))
    if backend != "cuda":  # the CUDA status path reports the weight code with the generic text
        assert "overflow" in str(error.value)
    for name, value in _state(g).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_scalar_weight_overflowing_the_total_over_two_arms_is_rejected():
    g = GridBounds(1, 3, 0, bound="bernstein")
    big = float(np.finfo(np.float64).max)
    g.update(np.array([0]), np.array([1.0]), weight=big)
    before = _state(g)
    with pytest.raises(ValueError, match="weight: too large.*overflow"):
        g.update(np.array([1]), np.array([1.0]), weight=big)  # another arm: the learner's total overflows
    for name, value in _state(g).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_counts_are_float64_sums_exact_below_two_to_the_53():
    """The documented exactness rule: counts are float64 sums of the weights, exact integers
    while the total stays below 2**53; beyond, each addition rounds as float64 does."""
    g = GridBounds(1, 2, 0)
    ref = ReferenceBounds(1, 2, 0)
    for w in (2.0**53 - 2, 1.0, 1.0, 1.0):  # 2**53 - 1 and 2**53 exact; 2**53 + 1 rounds to 2**53
        g.update(np.array([0]), np.array([1.0]), weight=w)
        ref.update(np.array([0]), np.array([1.0]), np.zeros((1, 0)), w)
    assert g.counts[0, 0] == ref.count[0, 0] == 2.0**53
    assert g.total[0] == ref.total[0] and g.means[0, 0, 0] == 1.0


@pytest.mark.parametrize("bound", ["hoeffding", "bernstein"])
def test_confidence_log_beyond_float64_stays_finite(bound):
    # 2 K T / delta = 2 * 5 * 1e308 / 1e-300 overflows float64; log space keeps L finite (~1402).
    g = GridBounds(1, 5, 1, bound=bound, horizon=1e308, delta=1e-300)
    ref = ReferenceBounds(1, 5, 1, bound=bound, horizon=1e308, delta=1e-300)
    rng = np.random.default_rng(3)
    for _ in range(12):
        arm = g.select("ofs")
        reward, residual = rng.random(1), rng.uniform(-1, 1, (1, 1))
        g.update(arm, reward, residual, weight=50.0)
        ref.update(arm, reward, residual, 50.0)
    ucb, lcb = g.bounds()
    ref_ucb, ref_lcb = ref.bounds()
    tried = g.counts[0] > 0
    assert tried.all() and np.isfinite(ucb).all() and np.isfinite(lcb).all()
    np.testing.assert_allclose(ucb, ref_ucb, rtol=1e-12)
    np.testing.assert_allclose(lcb, ref_lcb, rtol=1e-12)
