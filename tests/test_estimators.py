"""The off-policy estimators beyond the paper (sndr, switch_dr, dros, sg_ips, sg_dr) and the
imputation objectives (dr_jl, mrdr): loss values against Open Bandit Pipeline itself, and the
defining properties of each estimator (limits of its hyper-parameter, invariances).

OBP (st-tech/zr-obp) 0.4.1 evaluates a policy from logged bandit feedback; our loss maps onto
it with two actions, "observed" (0) and "not" (1): the evaluation policy always picks
"observed", the logged action is 0 where o = 1 (propensity max(p, p_min)) and 1 elsewhere
(propensity 1 - p), the reward is the row loss l~ and the regression model's estimate for
"observed" is the imputed loss e.  Then OBP's importance weight is our w = o / max(p, p_min)
and its policy value is our reduced loss.  Install:
``pip install --no-deps obp==0.4.1 && pip install scipy scikit-learn seaborn mypy-extensions pyyaml``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fairkernels import propensity_loss
from propensity_reference import base_loss, reference_loss, sigmoid, surrogate
from test_propensity import IMPUTED, assert_close, make_inputs

RHO10, RHO01, P_MIN = 0.1, 0.2, 0.1


def _inputs(n=5000, seed=0):
    f, y, o, p, h = make_inputs(n, seed=seed)
    p = np.random.default_rng(seed + 1).uniform(0.02, 0.98, n)  # 1 - p > 0: "not observed" is loggable
    return f, y, o, p, h


def _call(estimator, f, y, o, p, h, **kw):
    return propensity_loss(f, y, o, p, h if estimator in IMPUTED else None, estimator=estimator, rho10=RHO10,
                           rho01=RHO01, p_min=P_MIN, **kw)


# ---------------------------------------------------------------------------------------------
# Open Bandit Pipeline on the same numbers.

@pytest.fixture(scope="module")
def obp_ope():
    return pytest.importorskip("obp.ope", reason="Open Bandit Pipeline 0.4.1 (pip install --no-deps obp==0.4.1)")


def _obp_feedback(f, y, o, p, h):
    """Our inputs as OBP's logged bandit feedback with two actions (see the module doc)."""
    n = f.shape[0]
    action = np.where(o, 0, 1)
    pscore = np.where(o, np.maximum(p, P_MIN), 1.0 - p)
    action_dist = np.zeros((n, 2, 1))
    action_dist[:, 0, 0] = 1.0  # the evaluation policy: "observed" with probability 1
    estimated = np.zeros((n, 2, 1))
    estimated[:, 0, 0] = base_loss(f, sigmoid(h))  # e_i
    estimated[:, 1, 0] = 7.0  # never weighted by the evaluation policy: any value
    return dict(reward=surrogate(f, y, RHO10, RHO01), action=action, position=np.zeros(n, dtype=int),
                pscore=pscore, action_dist=action_dist, estimated_rewards_by_reg_model=estimated)


OBP_CASES = [
    ("ips", {}, lambda ope: ope.InverseProbabilityWeighting()),
    ("snips", {}, lambda ope: ope.SelfNormalizedInverseProbabilityWeighting()),
    ("dr", {}, lambda ope: ope.DoublyRobust()),
    ("sndr", {}, lambda ope: ope.SelfNormalizedDoublyRobust()),
    ("switch_dr", dict(tau=4.0), lambda ope: ope.SwitchDoublyRobust(tau=4.0)),
    ("switch_dr", dict(tau=0.5), lambda ope: ope.SwitchDoublyRobust(tau=0.5)),
    ("switch_dr", dict(tau=np.inf), lambda ope: ope.SwitchDoublyRobust(tau=np.inf)),
    ("dros", dict(lambda_=3.0), lambda ope: ope.DoublyRobustWithShrinkage(lambda_=3.0)),
    ("dros", dict(lambda_=0.5), lambda ope: ope.DoublyRobustWithShrinkage(lambda_=0.5)),
    # (OBP 0.4.1 gives NaN at lambda 0 and inf, 0/0 and inf/inf: test_hyper_parameter_limits)
    ("dros", dict(lambda_=1e4), lambda ope: ope.DoublyRobustWithShrinkage(lambda_=1e4)),
]


@pytest.mark.parametrize("estimator, hyper, make_obp", OBP_CASES,
                         ids=[f"{e}-{list(h.values())}" for e, h, _ in OBP_CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_equals_obp_policy_value(obp_ope, estimator, hyper, make_obp, dtype):
    f, y, o, p, h = _inputs(seed=3)
    expected = make_obp(obp_ope).estimate_policy_value(**_obp_feedback(f, y, o, p, h))
    cast = [a.astype(dtype) if a.dtype != bool else a for a in (f, y, o, p, h)]
    got = _call(estimator, *cast, **hyper)
    assert np.isfinite(expected)
    assert_close(got, expected, 1e-12 if dtype == np.float64 else 2e-5, f"{estimator} {hyper} vs OBP")


def test_obp_encoding_is_not_vacuous(obp_ope):
    """The OBP values of the estimators differ from each other on these inputs, so each match
    above pins its own formula."""
    feedback = _obp_feedback(*_inputs(seed=3))
    values = [make(obp_ope).estimate_policy_value(**feedback) for _, _, make in OBP_CASES[:6]]
    assert len({round(v, 9) for v in values}) == len(values), values


# ---------------------------------------------------------------------------------------------
# Defining properties, kernel against kernel.


def test_hyper_parameter_limits():
    a = _inputs(seed=5)
    dr = _call("dr", *a, return_grad=True)
    ips = _call("ips", *a, return_grad=True)
    direct = float(base_loss(a[0], sigmoid(a[4])).mean())  # the imputation alone
    for name, got, want in [
        ("switch_dr tau=inf is dr", _call("switch_dr", *a, tau=np.inf, return_grad=True), dr),
        ("dros lambda=inf is dr", _call("dros", *a, lambda_=np.inf, return_grad=True), dr),
        ("sg_dr lambda=0 is dr", _call("sg_dr", *a, lambda_=0.0, return_grad=True), dr),
        ("sg_ips lambda=0 is ips", _call("sg_ips", *a, lambda_=0.0, return_grad=True), ips),
    ]:
        for g, w in zip(got, want):
            if w is None:
                assert g is None
            else:
                assert_close(g, w, 1e-12, name)
    # Every observed weight is >= 1: a threshold below 1 switches every row to the imputation,
    # and no shrinkage (lambda 0) keeps no weight at all.
    assert_close(_call("switch_dr", *a, tau=0.99), direct, 1e-12, "switch_dr tau<1 is the imputation")
    assert_close(_call("dros", *a, lambda_=0.0), direct, 1e-12, "dros lambda=0 is the imputation")


def test_sg_lambda_one_gives_unit_weights():
    f, y, o, p, h = _inputs(seed=6)
    got = _call("sg_ips", f, y, o, p, h, lambda_=1.0)
    assert_close(got, float((o * surrogate(f, y, RHO10, RHO01)).sum() / len(f)), 1e-12, "sg_ips lambda=1")


def test_sub_gaussian_and_shrinkage_weights_are_bounded():
    """The transformed weights never exceed the raw ones, and are bounded whatever p is:
    sg by 1/lambda, dros by sqrt(lambda)/2 (p_min = 0, propensities down to 1e-6).  Rows with
    logit 1, label 0 and a confident imputation (h = 30, e = softplus(-1)) make the weight v of
    each row readable from the per-row terms."""
    n = 2000
    f, y, h = np.ones(n), np.zeros(n), np.full(n, 30.0)
    o = np.ones(n, dtype=bool)
    p = np.geomspace(1e-6, 1.0, n)
    loss0, e = np.logaddexp(0.0, 1.0), base_loss(1.0, sigmoid(30.0))
    w = propensity_loss(f, y, o, p, estimator="ips", p_min=0.0, reduction="none") / loss0
    assert_close(w, 1 / p, 1e-12, "raw weights")
    for estimator, lambda_, bound in (("sg_ips", 0.25, 4.0), ("sg_dr", 0.25, 4.0), ("dros", 9.0, 1.5)):
        imputed = h if estimator in IMPUTED else None
        rows = propensity_loss(f, y, o, p, imputed, estimator=estimator, lambda_=lambda_, p_min=0.0,
                               reduction="none")
        v = (rows - e) / (loss0 - e) if imputed is not None else rows / loss0
        assert np.all(v <= w * (1 + 1e-9)) and np.max(v) <= bound * (1 + 1e-9), estimator
        assert np.max(v) > 0.9 * bound  # the bound is approached: the transform is not a no-op


def test_sndr_self_normalises():
    """sndr = mean imputation + sum w (l~ - e) / sum w: scaling every propensity leaves it
    unchanged; with every row observed at p = 1 it is the plain mean of l~ (as dr)."""
    f, y, o, p, h = _inputs(seed=8)
    base = _call("sndr", f, y, o, p, h, return_grad=True)
    kw = dict(estimator="sndr", rho10=RHO10, rho01=RHO01, p_min=0.0, return_grad=True)
    unclipped = propensity_loss(f, y, o, p, h, **kw)
    halved = propensity_loss(f, y, o, p * 0.5, h, **kw)
    for a, b in zip(unclipped, halved):
        assert_close(a, b, 1e-12, "sndr under p -> p / 2")
    assert abs(float(base[0]) - float(unclipped[0])) > 0  # p_min does clip some rows here
    every = np.ones_like(o)
    ones = np.ones_like(p)
    assert_close(_call("sndr", f, y, every, ones, h), surrogate(f, y, RHO10, RHO01).mean(), 1e-12, "sndr p=1")
    # No observed row: the imputation alone, gradients to the imputation logits only through e.
    none_observed = np.zeros_like(o)
    loss, grad, grad_h = _call("sndr", f, y, none_observed, p, h, return_grad=True)
    assert_close(loss, base_loss(f, sigmoid(h)).mean(), 1e-12, "sndr without observations")
    assert np.all(np.isfinite(grad)) and np.any(grad_h != 0)


def test_imputation_objectives():
    """dr_jl and mrdr are weighted squared errors of the imputed loss over observed rows:
    non-negative, zero on unobserved rows, mrdr zero at p = 1, and their gradients to the
    imputation logits match the reference (also for the pairwise base)."""
    f, y, o, p, h = _inputs(seed=9)
    for estimator in ("dr_jl", "mrdr"):
        rows, grad, grad_h = _call(estimator, f, y, o, p, h, reduction="none", return_grad=True)
        assert np.all(rows >= 0) and np.all(rows[~o] == 0) and np.all(grad_h[~o] == 0)
        assert np.any(grad_h != 0)
        ref = reference_loss(f, y, o, p, h, estimator=estimator, rho10=RHO10, rho01=RHO01, p_min=P_MIN)
        got = _call(estimator, f, y, o, p, h, return_grad=True)
        for g, r in zip(got, ref):
            assert_close(g, r, 1e-10, estimator)
    at_one = _call("mrdr", f, y, o, np.ones_like(p), h, reduction="none")
    assert np.all(at_one == 0)
    # dr_jl's weight is w, mrdr's is w^2 (1 - pc): on one row they relate exactly.
    jl = _call("dr_jl", f, y, o, p, h, reduction="none")
    mr = _call("mrdr", f, y, o, p, h, reduction="none")
    pc = np.maximum(p, P_MIN)
    assert_close(mr[o], jl[o] * (1 - pc[o]) / pc[o], 1e-10, "mrdr / dr_jl")
    pair = make_inputs(300, "bt", seed=2)
    for estimator in ("dr_jl", "mrdr"):
        got = propensity_loss(*pair, estimator=estimator, base="bt", rho10=RHO10, return_grad=True)
        ref = reference_loss(*pair, estimator=estimator, base="bt", rho10=RHO10)
        for g, r in zip(got, ref):
            assert_close(g, r, 1e-10, f"{estimator} bt")
