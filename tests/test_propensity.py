"""Tests of the propensity-weighted, noise-aware loss: kernel vs numpy reference over the
option grid, the estimators' defining properties, edge cases, validation, torch autograd /
opcheck / compile, and CUDA parity (marked, skipped without a device)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from fairkernels import propensity_loss
from propensity_reference import base_loss, reference_loss

ESTIMATORS = ("naive", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sg_ips", "sg_dr", "dr_jl", "mrdr")
IMPUTED = ("dr", "sndr", "switch_dr", "dros", "sg_dr", "dr_jl", "mrdr")
# Hyper-parameters for the grid: tau = 4 switches off the rows with p < 1/4 (make_inputs draws
# p from [0.02, 1]); lambda_ = 3 shrinks the large weights of dros.
def assert_gradcheck(loss_fn, estimator, f, y, o, p, h):
    """torch.autograd.gradcheck of loss_fn through the logits (and the imputation logits for the
    estimators that read them), float64 inputs."""
    import torch

    f_ = f.clone().requires_grad_()
    if estimator in IMPUTED:
        h_ = h.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, y, o, p, b), (f_, h_))
    else:
        assert torch.autograd.gradcheck(lambda a: loss_fn(a, y, o, p), (f_,))


HYPER = {"switch_dr": dict(tau=4.0), "dros": dict(lambda_=3.0), "sg_ips": dict(lambda_=0.3), "sg_dr": dict(lambda_=0.3)}
REDUCTIONS = ("mean", "sum", "none")
TOL = {np.float64: 1e-10, np.float32: 2e-5}


def make_inputs(n, base="bce", dtype=np.float64, seed=0, scale=3.0, observed_dtype=bool, p_low=0.02):
    rng = np.random.default_rng(seed)
    shape = (n, 2) if base == "bt" else (n,)
    logits = (rng.normal(size=shape) * scale).astype(dtype)
    imputed = (rng.normal(size=shape) * 2.0).astype(dtype)
    labels = (rng.random(n) < 0.4).astype(dtype)
    observed = (rng.random(n) < 0.3).astype(observed_dtype)
    propensity = rng.uniform(p_low, 1.0, n).astype(dtype)
    return logits, labels, observed, propensity, imputed


def call(logits, labels, observed, propensity, imputed, estimator, **kw):
    return propensity_loss(
        logits, labels, observed, propensity, imputed if estimator in IMPUTED else None, estimator=estimator,
        return_grad=True, **{**HYPER.get(estimator, {}), **kw},
    )


def assert_close(actual, expected, tol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    err = float(np.max(np.abs(actual - expected))) / scale if expected.size else 0.0
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


# ---------------------------------------------------------------------------------------------
# Kernel against the reference, across the whole option grid.


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("base", ["bce", "bt"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_matches_reference_over_grid(dtype, base, estimator):
    # 40,000 rows span several fixed chunks and blocks, plus a ragged tail.
    inputs = make_inputs(40_003, base, dtype, seed=hash((base, estimator)) % 1000)
    grid = itertools.product(REDUCTIONS, (False, True), ((0.0, 0.0), (0.1, 0.2), (0.3, 0.25)), (0.1, 0.0))
    for reduction, nonnegative, (rho10, rho01), p_min in grid:
        kw = dict(base=base, rho10=rho10, rho01=rho01, p_min=p_min, reduction=reduction, nonnegative=nonnegative,
                  **HYPER.get(estimator, {}))
        loss, grad, grad_h = call(*inputs, estimator, **kw)
        ref_loss, ref_grad, ref_grad_h = reference_loss(*inputs, estimator=estimator, **kw)
        what = f"{kw}"
        assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == inputs[0].shape
        assert_close(loss, ref_loss, TOL[dtype], "loss " + what)
        assert_close(grad, ref_grad, TOL[dtype], "grad " + what)
        if estimator in IMPUTED:
            assert grad_h.shape == inputs[0].shape
            assert_close(grad_h, ref_grad_h, TOL[dtype], "grad_imputed " + what)
        else:
            assert grad_h is None


@pytest.mark.parametrize("observed_dtype", [bool, np.uint8, np.float32, np.int64])
def test_observed_dtypes_agree(observed_dtype):
    f, y, o, p, h = make_inputs(1000, dtype=np.float32, observed_dtype=observed_dtype)
    loss, grad, _ = call(f, y, o, p, h, "snips", rho10=0.1, rho01=0.1)
    ref_loss, ref_grad, _ = reference_loss(f, y, o, p, h, estimator="snips", rho10=0.1, rho01=0.1)
    assert_close(loss, ref_loss, 2e-5, "loss")
    assert_close(grad, ref_grad, 2e-5, "grad")


def test_soft_labels_and_non_contiguous_inputs():
    f, y, o, p, h = make_inputs(2000, base="bt")
    y = np.random.default_rng(1).random(2000)  # soft labels in [0, 1]
    f_t = np.ascontiguousarray(f.T).T  # same values, column-major: must be copied, not misread
    loss, grad, grad_h = call(f_t, y[::-1].copy()[::-1], o, p, h, "dr", base="bt", rho10=0.05, rho01=0.1)
    ref = reference_loss(f, y, o, p, h, base="bt", estimator="dr", rho10=0.05, rho01=0.1)
    assert_close(loss, ref[0], 1e-10, "loss")
    assert_close(grad, ref[1], 1e-10, "grad")
    assert_close(grad_h, ref[2], 1e-10, "grad_h")


def test_bt_difference_equals_bce_on_difference():
    f, y, o, p, h = make_inputs(500, base="bt")
    pair = propensity_loss(f, y, o, p, base="bt", estimator="ips", rho10=0.1)
    diff = propensity_loss(f[:, 0] - f[:, 1], y, o, p, base="bt", estimator="ips", rho10=0.1)
    bce = propensity_loss(f[:, 0] - f[:, 1], y, o, p, base="bce", estimator="ips", rho10=0.1)
    assert_close(pair, diff, 1e-12, "bt pair vs difference")
    assert float(diff) == float(bce)


# ---------------------------------------------------------------------------------------------
# Defining properties of the estimators and the correction.


@pytest.mark.parametrize("rho10, rho01", [(0.1, 0.2), (0.2, 0.1), (0.3, 0.45)])
def test_noise_correction_unbiased_by_exact_expectation(rho10, rho01):
    """E over the flips of l~(z, noisy y) equals the clean loss l(z, y), row by row, for the
    value and the gradient: P(noisy 1 | y=0) = rho10, P(noisy 0 | y=1) = rho01."""
    n = 300
    f, y, o, p, _ = make_inputs(n, scale=10.0)
    o = np.ones(n, dtype=bool)
    ones, zeros = np.ones(n), np.zeros(n)
    kw = dict(estimator="naive", rho10=rho10, rho01=rho01, reduction="none")
    l_if1, g_if1, _ = propensity_loss(f, ones, o, return_grad=True, **kw)
    l_if0, g_if0, _ = propensity_loss(f, zeros, o, return_grad=True, **kw)
    p_noisy1 = np.where(y == 1, 1 - rho01, rho10)
    expected_loss = p_noisy1 * l_if1 + (1 - p_noisy1) * l_if0
    expected_grad = p_noisy1 * g_if1 + (1 - p_noisy1) * g_if0
    clean_loss, clean_grad, _ = propensity_loss(f, y, o, estimator="naive", reduction="none", return_grad=True)
    assert_close(expected_loss, base_loss(f, y), 1e-9, "expected surrogate vs clean loss")
    assert_close(expected_loss, clean_loss, 1e-9, "expected surrogate vs kernel clean loss")
    assert_close(expected_grad, clean_grad, 1e-9, "expected surrogate gradient")
    # ... and the correction does change individual rows (it can be negative).
    assert np.min(l_if0) < 0 or np.min(l_if1) < 0


def test_ips_with_unit_propensity_is_the_plain_mean():
    torch = pytest.importorskip("torch")
    f, y, _, _, _ = make_inputs(5000)
    o = np.ones(5000, dtype=bool)
    p = np.ones(5000)
    loss, grad, _ = propensity_loss(f, y, o, p, estimator="ips", return_grad=True)
    ft = torch.tensor(f, requires_grad=True)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(ft, torch.tensor(y))
    plain.backward()
    assert_close(loss, plain.item(), 1e-12, "ips(p=1) vs BCE mean")
    assert_close(grad, ft.grad.numpy(), 1e-12, "gradient")
    for estimator in ("naive", "snips"):
        assert_close(propensity_loss(f, y, o, p, estimator=estimator), plain.item(), 1e-12, estimator)


def test_snips_invariant_to_scaling_propensities():
    f, y, o, p, _ = make_inputs(3000, p_low=0.05)
    kw = dict(estimator="snips", rho10=0.1, rho01=0.2, p_min=0.0, return_grad=True)
    loss, grad, _ = propensity_loss(f, y, o, p, **kw)
    for c in (0.5, 0.125):
        scaled_loss, scaled_grad, _ = propensity_loss(f, y, o, p * c, **kw)
        assert_close(scaled_loss, loss, 1e-12, f"snips loss, scale {c}")
        assert_close(scaled_grad, grad, 1e-12, f"snips grad, scale {c}")
    ips = propensity_loss(f, y, o, p * 0.5, estimator="ips", p_min=0.0)
    assert abs(float(ips) - 2 * float(propensity_loss(f, y, o, p, estimator="ips", p_min=0.0))) < 1e-9


def test_p_min_clips_propensity():
    f, y, o, _, _ = make_inputs(1000)
    tiny = np.full(1000, 1e-4)
    clipped = propensity_loss(f, y, o, tiny, estimator="ips", p_min=0.2)
    at_floor = propensity_loss(f, y, o, np.full(1000, 0.2), estimator="ips", p_min=0.2)
    assert float(clipped) == float(at_floor)


def test_nonnegative_clamps_and_zeroes_gradient():
    # A confident, correct logit (z = 8, label 1) has l1 ~ 3e-4 and l0 ~ 8, so with rho01 > 0
    # the surrogate ((1 - rho10) l1 - rho01 l0) / d is negative.
    n = 200
    f, y, o = np.full(n, 8.0), np.ones(n), np.ones(n, dtype=bool)
    kw = dict(estimator="naive", rho10=0.0, rho01=0.45, return_grad=True)
    raw, raw_grad, _ = propensity_loss(f, y, o, **kw)
    assert float(raw) < 0 and np.all(raw_grad != 0)
    clamped, grad, _ = propensity_loss(f, y, o, nonnegative=True, **kw)
    assert float(clamped) == 0.0 and np.all(grad == 0)
    rows, row_grad, _ = propensity_loss(f, y, o, nonnegative=True, reduction="none", **kw)
    assert np.all(rows == 0) and np.all(row_grad == 0)
    # a positive loss passes through untouched
    assert float(propensity_loss(-f, y, o, nonnegative=True, **kw)[0]) == float(propensity_loss(-f, y, o, **kw)[0])


# ---------------------------------------------------------------------------------------------
# Awkward inputs.


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("base", ["bce", "bt"])
def test_extreme_logits_are_finite_and_exact(dtype, base):
    n = 64
    rng = np.random.default_rng(3)
    shape = (n, 2) if base == "bt" else (n,)
    f = rng.choice([-1e4, 1e4, -3e3, 88.0, -104.0, 0.0, 1e-30], size=shape).astype(dtype)
    h = rng.choice([-1e4, 1e4, 0.0], size=shape).astype(dtype)
    y = (rng.random(n) < 0.5).astype(dtype)
    o = np.ones(n, dtype=bool)
    p = np.full(n, 0.5, dtype=dtype)
    for estimator in ESTIMATORS:
        loss, grad, grad_h = call(f, y, o, p, h, estimator, base=base, rho10=0.1, rho01=0.2, reduction="none")
        ref = reference_loss(f, y, o, p, h, base=base, estimator=estimator, rho10=0.1, rho01=0.2, reduction="none",
                             **HYPER.get(estimator, {}))
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        # loss values reach 2e4 (pair differences): compare relative to the magnitude
        assert_close(loss, ref[0], 1e-6, f"{estimator} loss")
        assert_close(grad, ref[1], 1e-6, f"{estimator} grad")


def test_empty_input():
    f = np.zeros(0)
    for estimator in ESTIMATORS:
        for reduction in REDUCTIONS:
            loss, grad, grad_h = call(f, f, f.astype(bool), f, f, estimator, reduction=reduction)
            assert grad.shape == (0,)
            if reduction == "none":
                assert loss.shape == (0,)
            else:
                assert loss.shape == () and float(loss) == 0.0


def test_all_unobserved_batch_is_defined():
    """No observed row: naive, ips and snips give loss 0 and zero gradients (nothing to learn
    from); dr gives the mean loss against the imputed labels."""
    f, y, _, p, h = make_inputs(500)
    o = np.zeros(500, dtype=bool)
    for estimator in ("naive", "ips", "snips"):
        loss, grad, _ = call(f, y, o, p, h, estimator, rho10=0.1, rho01=0.1)
        assert float(loss) == 0.0 and np.all(grad == 0)
    loss, grad, grad_h = call(f, y, o, p, h, "dr", rho10=0.1, rho01=0.1)
    q = 1 / (1 + np.exp(-h))
    assert_close(loss, base_loss(f, q).mean(), 1e-12, "dr without observations")
    assert np.any(grad != 0) and np.any(grad_h != 0)


def test_deterministic_across_calls_and_thread_counts():
    code = (
        "import numpy as np, sys; sys.path.insert(0, 'tests'); from test_propensity import make_inputs;"
        "from fairkernels import propensity_loss;"
        "a = make_inputs(300_001, dtype=np.float32, seed=7);"
        "print(float(propensity_loss(*a, estimator='dr', rho10=0.1, rho01=0.2)).hex())"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = set()
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                             check=True)
        outputs.add(run.stdout.strip())
    assert len(outputs) == 1, outputs
    a = make_inputs(300_001, dtype=np.float32, seed=7)
    first = propensity_loss(*a, estimator="dr", rho10=0.1, rho01=0.2)
    assert float(first).hex() == outputs.pop()


@pytest.mark.parametrize("isa", ["baseline", "avx2", "widest"])
def test_every_cpu_build_matches_the_reference(isa):
    """The baseline (SSE2), AVX2 and AVX-512 builds of the pass (chosen at run time; capped by
    FAIRKERNELS_PROPENSITY_ISA) all match the reference.  On a processor without a build's
    instructions the cap just selects the next narrower one."""
    code = (
        "import numpy as np, sys; sys.path.insert(0, 'tests');"
        "from test_propensity import make_inputs, ESTIMATORS, IMPUTED, HYPER;"
        "from propensity_reference import reference_loss; from fairkernels import propensity_loss;"
        "worst = 0.0\n"
        "for base in ('bce', 'bt'):\n"
        "  for est in ESTIMATORS:\n"
        "    a = make_inputs(20_011, base, np.float32, seed=3)\n"
        "    kw = dict(base=base, estimator=est, rho10=0.1, rho01=0.2, **HYPER.get(est, {}))\n"
        "    got = propensity_loss(*a[:4], a[4] if est in IMPUTED else None, return_grad=True, **kw)\n"
        "    ref = reference_loss(*a, **kw)\n"
        "    worst = max(worst, abs(float(got[0]) - ref[0]) / max(1, abs(ref[0])),\n"
        "                float(np.max(np.abs(got[1] - ref[1]))) / max(1e-30, float(np.max(np.abs(ref[1])))))\n"
        "  for mode in (dict(correction='forward'), dict(nonnegative='classwise', gamma=0.5)):\n"
        "    a = make_inputs(20_011, base, np.float32, seed=3)\n"
        "    kw = dict(base=base, estimator='dr', rho10=0.1, rho01=0.35, **mode)\n"
        "    got = propensity_loss(*a, return_grad=True, **kw)\n"
        "    ref = reference_loss(*a, **kw)\n"
        "    worst = max(worst, abs(float(got[0]) - ref[0]) / max(1, abs(ref[0])),\n"
        "                float(np.max(np.abs(got[1] - ref[1]))) / max(1e-30, float(np.max(np.abs(ref[1])))))\n"
        "a = make_inputs(20_011, 'bce', np.float32, seed=3)\n"
        "r = np.random.default_rng(0).random(20_011).astype(np.float32)\n"
        "got = propensity_loss(a[0], r, *a[2:], base='mse', estimator='sndr', return_grad=True)\n"
        "ref = reference_loss(a[0], r, *a[2:], base='mse', estimator='sndr')\n"
        "worst = max(worst, float(np.max(np.abs(got[1] - ref[1]))) / float(np.max(np.abs(ref[1]))))\n"
        "print(worst)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FAIRKERNELS_PROPENSITY_ISA=isa)
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 2e-5


# ---------------------------------------------------------------------------------------------
# Validation: ValueError naming the argument.


def _valid(n=10):
    f, y, o, p, h = make_inputs(n)
    return dict(logits=f, labels=y, observed=o, propensity=p, imputed_logits=h)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("propensity", lambda a: np.where(np.arange(10) == 3, 0.0, a["propensity"]), "propensity"),
        ("propensity", lambda a: np.where(np.arange(10) == 3, 1.5, a["propensity"]), "propensity"),
        ("propensity", lambda a: np.where(np.arange(10) == 3, np.nan, a["propensity"]), "propensity"),
        ("labels", lambda a: np.where(np.arange(10) == 3, 2.0, a["labels"]), "labels"),
        ("labels", lambda a: np.where(np.arange(10) == 3, -0.5, a["labels"]), "labels"),
        ("labels", lambda a: np.where(np.arange(10) == 3, np.nan, a["labels"]), "labels"),
        ("logits", lambda a: np.where(np.arange(10) == 3, np.nan, a["logits"]), "logits"),
        ("logits", lambda a: np.where(np.arange(10) == 3, np.inf, a["logits"]), "logits"),
        ("imputed_logits", lambda a: np.where(np.arange(10) == 3, np.nan, a["imputed_logits"]), "imputed_logits"),
        ("observed", lambda a: np.where(np.arange(10) == 3, 2, 1).astype(np.int64), "observed"),
        ("observed", lambda a: np.full(10, 0.5), "observed"),
        ("labels", lambda a: np.zeros(9), "labels"),
        ("propensity", lambda a: np.ones(11), "propensity"),
        ("imputed_logits", lambda a: np.zeros(9), "imputed_logits"),
    ],
)
def test_invalid_arrays_raise_naming_the_argument(name, value, match):
    args = _valid()
    args[name] = value(args)
    with pytest.raises(ValueError, match=match):
        propensity_loss(**args, estimator="dr")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rho10=0.6, rho01=0.4), "rho10 \\+ rho01"),
        (dict(rho10=0.7, rho01=0.5), "rho10 \\+ rho01"),
        (dict(rho10=-0.1), "rho10"),
        (dict(rho01=1.0), "rho01"),
        (dict(rho10=float("nan")), "rho10"),
        (dict(p_min=1.5), "p_min"),
        (dict(estimator="dm"), "estimator"),
        (dict(base="hinge"), "base"),
        (dict(reduction="max"), "reduction"),
        (dict(estimator="switch_dr"), "tau is required"),
        (dict(estimator="switch_dr", tau=-1.0), "tau"),
        (dict(estimator="switch_dr", tau=float("nan")), "tau"),
        (dict(estimator="dros"), "lambda_ is required"),
        (dict(estimator="dros", lambda_=-0.5), "lambda_"),
        (dict(estimator="sg_ips"), "lambda_ is required"),
        (dict(estimator="sg_dr", lambda_=1.5), "lambda_"),
        (dict(estimator="sg_ips", lambda_=float("inf")), "lambda_"),
        (dict(estimator="ips", tau=2.0), "tau is only used"),
        (dict(estimator="switch_dr", tau=2.0, lambda_=0.5), "lambda_ is only used"),
        (dict(estimator="dr", lambda_=0.5), "lambda_ is only used"),
    ],
)
def test_invalid_options_raise(kw, match):
    args = _valid()
    kw = {"estimator": "ips", **kw}
    del args["imputed_logits"]
    with pytest.raises(ValueError, match=match):
        propensity_loss(**args, **kw)


def test_missing_or_extra_inputs():
    args = _valid()
    with pytest.raises(ValueError, match="propensity"):
        propensity_loss(args["logits"], args["labels"], args["observed"], estimator="ips")
    with pytest.raises(ValueError, match="imputed_logits"):
        propensity_loss(args["logits"], args["labels"], args["observed"], args["propensity"], estimator="dr")
    with pytest.raises(ValueError, match="imputed_logits"):
        propensity_loss(**args, estimator="ips")
    with pytest.raises(ValueError, match="imputed_logits"):
        propensity_loss(**args, estimator="sg_ips", lambda_=0.5)
    for estimator in ("sndr", "dr_jl", "mrdr"):
        with pytest.raises(ValueError, match=f"imputed_logits are required by estimator='{estimator}'"):
            propensity_loss(args["logits"], args["labels"], args["observed"], args["propensity"], estimator=estimator)
    with pytest.raises(ValueError, match="logits"):
        propensity_loss(np.zeros((10, 2)), args["labels"], args["observed"], args["propensity"], base="bce")
    with pytest.raises(TypeError, match="logits"):
        propensity_loss(np.zeros(10, dtype=np.int64), args["labels"], args["observed"], args["propensity"])
    # naive does not need (or read) propensities
    assert np.isfinite(float(propensity_loss(args["logits"], args["labels"], args["observed"], estimator="naive")))


# ---------------------------------------------------------------------------------------------
# torch: autograd, opcheck, compile, the module.

torch = pytest.importorskip("torch")


def _torch_inputs(n, base, dtype=torch.float64, seed=0, device="cpu"):
    f, y, o, p, h = make_inputs(n, base, seed=seed)
    t = lambda a, d=dtype: torch.tensor(a, dtype=d, device=device)  # noqa: E731
    return t(f), t(y), torch.tensor(o, device=device), t(p), t(h)


@pytest.mark.parametrize("base", ["bce", "bt"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradcheck_float64(base, estimator):
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, h = _torch_inputs(9, base, seed=5)
    o[:3] = True
    for reduction, nonnegative, (rho10, rho01) in itertools.product(REDUCTIONS, (False, True), ((0, 0), (0.2, 0.1))):
        loss_fn = CausalRMLoss(base, estimator, rho10, rho01, 0.1, reduction, nonnegative, **HYPER.get(estimator, {}))
        assert_gradcheck(loss_fn, estimator, f, y, o, p, h)


NO_HYPER = (None, None, "backward", None, None)  # tau, lambda_, correction, beta, gamma of the ops


def test_opcheck():
    import fairkernels.torch  # noqa: F401  (registers the ops)

    f, y, o, p, h = _torch_inputs(33, "bt")
    common = ("bt", "dr", 0.1, 0.2, 0.1)
    fused = torch.ops.fairkernels.propensity_loss_fused.default
    forward = torch.ops.fairkernels.propensity_loss.default
    for reduction in REDUCTIONS:
        torch.library.opcheck(
            fused, (f.clone().requires_grad_(), y, o, p, h.clone().requires_grad_(), *common, reduction, "off",
                    *NO_HYPER)
        )
        torch.library.opcheck(forward, (f, y, o, p, h, *common, reduction, "total", *NO_HYPER))
    torch.library.opcheck(fused, (f[:, 0].clone().requires_grad_(), y, o.double(), p, None, "bce", "ips", 0, 0, 0.1,
                                  "mean", "off", *NO_HYPER))


@pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if e not in ("naive", "ips", "snips", "dr")])
def test_opcheck_new_estimators(estimator):
    import fairkernels.torch  # noqa: F401  (registers the ops)

    f, y, o, p, h = _torch_inputs(33, "bce")
    hyper = HYPER.get(estimator, {})
    tail = (hyper.get("tau"), hyper.get("lambda_"), "backward", None, None)
    h = h if estimator in IMPUTED else None
    fused = torch.ops.fairkernels.propensity_loss_fused.default
    forward = torch.ops.fairkernels.propensity_loss.default
    for reduction in REDUCTIONS:
        leaf_h = h.clone().requires_grad_() if h is not None else None
        torch.library.opcheck(fused, (f.clone().requires_grad_(), y, o, p, leaf_h, "bce", estimator, 0.1, 0.2, 0.1,
                                      reduction, "off", *tail))
        torch.library.opcheck(forward, (f, y, o, p, h, "bce", estimator, 0.1, 0.2, 0.1, reduction, "total", *tail))


def test_torch_compile_fullgraph_every_new_estimator():
    """One compiled step holding every new estimator (each a custom op call) plus the two
    imputation objectives on the imputer's logits: same losses and gradients as eager."""
    from fairkernels.torch import CausalRMLoss

    losses = [CausalRMLoss("bce", e, 0.1, 0.2, 0.1, "mean", e not in ("dr_jl", "mrdr"), **HYPER.get(e, {}))
              for e in ESTIMATORS if e not in ("naive", "ips", "snips", "dr")]
    # ... and the noise options: class-wise non-negative risk, forward correction, mse base.
    losses += [CausalRMLoss("bce", "dr", 0.1, 0.3, 0.1, "mean", "classwise", gamma=0.5),
               CausalRMLoss("bce", "sndr", 0.1, 0.2, 0.1, "mean", correction="forward"),
               CausalRMLoss("mse", "ips")]
    torch.manual_seed(1)
    x = torch.randn(256, 8)
    y = (torch.rand(256) < 0.4).float()
    o = torch.rand(256) < 0.3
    p = torch.rand(256) * 0.9 + 0.1

    def step(model, imputer):
        f, h = model(x).squeeze(-1), imputer(x).squeeze(-1)
        return [fn(f, y, o, p, h if fn.options.estimator in IMPUTED else None) for fn in losses]

    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model, imputer = torch.nn.Linear(8, 1), torch.nn.Linear(8, 1)
        fn = torch.compile(step, fullgraph=True) if compiled else step
        values = fn(model, imputer)
        sum(values).backward()
        results.append(([v.item() for v in values], [q.grad.clone() for q in (*model.parameters(),
                                                                              *imputer.parameters())]))
    (eager_values, eager_grads), (compiled_values, compiled_grads) = results
    np.testing.assert_allclose(compiled_values, eager_values, rtol=1e-6)
    assert all(np.isfinite(eager_values)) and len(set(eager_values)) == len(eager_values)
    for a, b in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_module_matches_numpy_and_return_grad():
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, h = _torch_inputs(1000, "bce", dtype=torch.float32)
    f.requires_grad_()
    h.requires_grad_()
    loss = CausalRMLoss("bce", "dr", 0.1, 0.2)(f, y, o, p, h)
    loss.backward()
    ref_loss, ref_grad, ref_grad_h = propensity_loss(
        f.detach().numpy(), y.numpy(), o.numpy(), p.numpy(), h.detach().numpy(), estimator="dr", rho10=0.1,
        rho01=0.2, return_grad=True,
    )
    assert loss.item() == float(ref_loss)
    assert torch.equal(f.grad, torch.from_numpy(ref_grad))
    assert torch.equal(h.grad, torch.from_numpy(ref_grad_h))
    t_loss, t_grad, t_grad_h = propensity_loss(f, y, o, p, h, estimator="dr", rho10=0.1, rho01=0.2, return_grad=True)
    assert torch.equal(t_grad, f.grad) and torch.equal(t_grad_h, h.grad)
    with torch.no_grad():  # forward-only op
        assert float(CausalRMLoss("bce", "dr", 0.1, 0.2)(f, y, o, p, h)) == float(loss)


def test_reduction_none_backward_with_weights():
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, _ = _torch_inputs(50, "bt")
    f.requires_grad_()
    weights = torch.rand(50, dtype=torch.float64)
    (CausalRMLoss("bt", "snips", reduction="none")(f, y, o, p) * weights).sum().backward()
    _, grad, _ = reference_loss(f.detach().numpy(), y.numpy(), o.numpy(), p.numpy(), base="bt", estimator="snips",
                                reduction="none")
    assert_close(f.grad.numpy(), grad * weights.numpy()[:, None], 1e-12, "weighted none backward")


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_backward_twice_and_gradient_accumulation(estimator):
    """The eager path hands its gradient buffers to the first backward; a second backward
    through the same graph (retain_graph) recomputes them, and accumulation stays exact."""
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, _ = _torch_inputs(300, "bce")
    f.requires_grad_()
    loss_fn = CausalRMLoss("bce", estimator, 0.1, 0.2)
    loss = loss_fn(f, y, o, p)
    loss.backward(retain_graph=True)
    first = f.grad.clone()
    loss.backward()
    torch.testing.assert_close(f.grad, 2 * first, rtol=0, atol=0)
    (3.0 * loss_fn(f, y, o, p)).backward()
    torch.testing.assert_close(f.grad, 5 * first, rtol=1e-15, atol=0)
    _, ref_grad, _ = reference_loss(f.detach().numpy(), y.numpy(), o.numpy(), p.numpy(), estimator=estimator,
                                    rho10=0.1, rho01=0.2)
    assert_close(first.numpy(), ref_grad, 1e-12, "first backward")


def test_torch_compile_fullgraph_training_step():
    from fairkernels.torch import CausalRMLoss

    torch.manual_seed(0)

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LeakyReLU(), torch.nn.Linear(16, 1))
        imputer = torch.nn.Linear(8, 1)
        return model, imputer

    loss_fn = CausalRMLoss("bce", "dr", 0.1, 0.2, 0.1, "mean", True)
    x = torch.randn(256, 8)
    y = (torch.rand(256) < 0.4).float()
    o = torch.rand(256) < 0.3
    p = torch.rand(256) * 0.9 + 0.1

    def step(model, imputer):
        return loss_fn(model(x).squeeze(-1), y, o, p, imputer(x).squeeze(-1))

    results = []
    for compiled in (False, True):
        model, imputer = build()
        opt = torch.optim.SGD(list(model.parameters()) + list(imputer.parameters()), lr=0.1)
        fn = torch.compile(step, fullgraph=True) if compiled else step
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = fn(model, imputer)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        results.append((losses, [q.detach().clone() for q in model.parameters()]))
    (eager_losses, eager_params), (compiled_losses, compiled_params) = results
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5)
    for a, b in zip(eager_params, compiled_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# CUDA: the same contract on the device (compared with the CPU kernel).


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("base", ["bce", "bt"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cuda_matches_cpu(dtype, base, estimator):
    cpu = _torch_inputs(100_003, base, dtype=dtype, seed=11)
    gpu = tuple(t.cuda() for t in cpu)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for reduction, nonnegative in itertools.product(REDUCTIONS, (False, True)):
        kw = dict(base=base, estimator=estimator, rho10=0.1, rho01=0.2, reduction=reduction,
                  nonnegative=nonnegative, return_grad=True, **HYPER.get(estimator, {}))
        want = propensity_loss(*cpu[:4], cpu[4] if estimator in IMPUTED else None, **kw)
        got = propensity_loss(*gpu[:4], gpu[4] if estimator in IMPUTED else None, **kw)
        for w, g in zip(want, got):
            if w is None:
                assert g is None
                continue
            assert g.device.type == "cuda" and g.dtype == dtype
            assert_close(g.cpu().numpy(), w.numpy(), tol, f"{kw}")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_accumulates_in_float32(dtype):
    cpu = _torch_inputs(50_000, "bce", dtype=torch.float32, seed=2)
    gpu = tuple(t.to(dtype).cuda() if t.is_floating_point() else t.cuda() for t in cpu)
    rounded = tuple(t.to(dtype).float() if t.is_floating_point() else t for t in cpu)
    want = propensity_loss(*rounded, estimator="dr", rho10=0.1, rho01=0.2, return_grad=True)
    got = propensity_loss(*gpu, estimator="dr", rho10=0.1, rho01=0.2, return_grad=True)
    assert got[0].dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for w, g in zip(want, got):
        assert_close(g.float().cpu().numpy(), w.numpy(), tol, str(dtype))


@pytest.mark.cuda
def test_cuda_deterministic_and_invalid_gives_nan():
    f, y, o, p, h = (t.cuda() for t in _torch_inputs(1_000_003, "bce", dtype=torch.float32, seed=4))
    a = propensity_loss(f, y, o, p, h, estimator="dr", rho10=0.1, rho01=0.2)
    b = propensity_loss(f, y, o, p, h, estimator="dr", rho10=0.1, rho01=0.2)
    assert a.item() == b.item()
    p[7] = 0.0
    assert torch.isnan(propensity_loss(f, y, o, p, h, estimator="dr")).item()


@pytest.mark.cuda
def test_cuda_autograd_and_compile():
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, h = _torch_inputs(64, "bt", device="cuda")
    f.requires_grad_()
    h.requires_grad_()
    loss_fn = CausalRMLoss("bt", "dr", 0.1, 0.2)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, y, o, p, b), (f, h))
    compiled = torch.compile(lambda a, b: loss_fn(a, y, o, p, b), fullgraph=True)
    torch.testing.assert_close(compiled(f, h), loss_fn(f, y, o, p, h))
