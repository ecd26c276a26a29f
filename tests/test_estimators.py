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
from propensity_reference import base_loss, class_risks, estimator_weight, reference_loss, sigmoid, surrogate
from test_propensity import IMPUTED, assert_close, assert_gradcheck, make_inputs

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


# ---------------------------------------------------------------------------------------------
# Noise correction without a negative risk: class-wise nnPU rule, forward correction, mse base.

NOISE_ESTIMATORS = ("naive", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sg_ips", "sg_dr", "dr_jl", "mrdr")
HYPER = {"switch_dr": dict(tau=4.0), "dros": dict(lambda_=3.0), "sg_ips": dict(lambda_=0.3), "sg_dr": dict(lambda_=0.3)}
MODES = [
    dict(correction="forward"),
    dict(correction="forward", nonnegative=True),
    dict(base="mse"),
    dict(nonnegative="classwise"),
    dict(nonnegative="classwise", beta=0.01, gamma=0.5),
]


def _mode_allowed(mode, estimator, reduction):
    classwise = mode.get("nonnegative") == "classwise"
    return not (classwise and (reduction == "none" or estimator in ("dr_jl", "mrdr")))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("mode", MODES, ids=[str(m) for m in MODES])
def test_noise_options_match_reference(mode, pairwise, dtype):
    if pairwise and mode.get("base") == "mse":
        pytest.skip("mse is pointwise")
    base = "bt" if pairwise else mode.get("base", "bce")
    inputs = make_inputs(20_011, base, dtype, seed=4)
    rates = {} if base == "mse" else dict(rho10=0.1, rho01=0.25)
    if base == "mse":  # ratings in [0, 1]
        inputs = (inputs[0], np.random.default_rng(0).random(20_011).astype(dtype), *inputs[2:])
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for estimator in NOISE_ESTIMATORS:
        for reduction in ("mean", "sum", "none"):
            if not _mode_allowed(mode, estimator, reduction):
                continue
            kw = dict(mode, base=base, estimator=estimator, reduction=reduction, **rates, **HYPER.get(estimator, {}))
            got = propensity_loss(*inputs[:4], inputs[4] if estimator in IMPUTED else None, return_grad=True, **kw)
            ref = reference_loss(*inputs, **kw)
            for g, r, what in zip(got, ref, ("loss", "grad", "grad_imputed")):
                if r is None:
                    assert g is None
                else:
                    assert g.dtype == dtype
                    assert_close(g, r, tol, f"{what} {kw}")


def _confident_positives(n=400, seed=0):
    """Correct, confident logits on positive rows with a large rho01: the backward correction
    makes R_0 = -rho01 / d sum w l(z, 0) strongly negative while R_1 stays positive."""
    rng = np.random.default_rng(seed)
    f = rng.normal(8.0, 0.5, n)
    y = np.ones(n)
    o = rng.random(n) < 0.7
    p = rng.uniform(0.2, 1.0, n)
    h = rng.normal(size=n)
    return f, y, o, p, h


@pytest.mark.parametrize("estimator", ["ips", "dr", "snips"])
def test_classwise_rule_flips_the_negative_class(estimator):
    a = _confident_positives()
    kw = dict(estimator=estimator, rho10=0.05, rho01=0.45)
    (r1, d1z, d1h), (r0, d0z, d0h) = class_risks(*a, **kw)
    assert r1 > 0 > r0  # the setting the rule is for
    imputed = a[4] if estimator in IMPUTED else None
    plain, plain_grad, _ = propensity_loss(*a[:4], imputed, return_grad=True, **kw)
    assert_close(plain, r1 + r0, 1e-12, "R = R_1 + R_0")
    for gamma in (1.0, 0.25, 0.0):
        loss, grad, grad_h = propensity_loss(*a[:4], imputed, nonnegative="classwise", gamma=gamma,
                                             return_grad=True, **kw)
        assert_close(loss, r1, 1e-12, "max(0, R_1) + max(0, R_0)")
        assert_close(grad, d1z - gamma * d0z, 1e-12, f"nnPU rule, gamma {gamma}")
        if imputed is not None:
            assert_close(grad_h, d1h - gamma * d0h, 1e-12, "nnPU rule, imputation")
    # beta above |R_0|: no flip, the gradient of R (and the clamped value).
    loss, grad, _ = propensity_loss(*a[:4], imputed, nonnegative="classwise", beta=-r0 + 1.0, return_grad=True, **kw)
    assert_close(loss, r1, 1e-12, "loss with a large beta")
    assert_close(grad, plain_grad, 1e-12, "no flip with beta > -R_0")
    # The total clamp, which the class-wise rule replaces, stops every gradient here.
    total = propensity_loss(*a[:4], imputed, nonnegative=True, return_grad=True, **kw)
    assert float(total[0]) == 0.0 and np.all(total[1] == 0)


def test_classwise_equals_plain_where_both_classes_are_positive():
    a = _inputs(seed=11)
    for estimator in ("ips", "dr", "sg_dr"):
        kw = dict(estimator=estimator, rho10=0.1, rho01=0.1, **HYPER.get(estimator, {}))
        r1, r0 = (risk for risk, _, _ in class_risks(*a, **kw))
        assert r1 > 0 and r0 > 0
        plain = _call(estimator, *a, return_grad=True, **HYPER.get(estimator, {}))
        classwise = _call(estimator, *a, nonnegative="classwise", return_grad=True, **HYPER.get(estimator, {}))
        for x, z in zip(plain, classwise):
            if x is not None:
                assert_close(z, x, 1e-12, estimator)


def test_forward_correction_properties():
    f, y, o, p, h = _inputs(seed=12)
    # No noise: plain BCE.
    plain = propensity_loss(f, y, o, p, estimator="ips", return_grad=True)
    forward = propensity_loss(f, y, o, p, estimator="ips", correction="forward", return_grad=True)
    for a, b in zip(plain[:2], forward[:2]):
        assert_close(b, a, 1e-12, "forward with rho = 0")
    # Rows are non-negative (no 1/d factor), unlike the backward correction's.
    rows = propensity_loss(f * 4, y, o, p, estimator="ips", correction="forward", rho10=0.2, rho01=0.3,
                           reduction="none")
    backward = propensity_loss(f * 4, y, o, p, estimator="ips", rho10=0.2, rho01=0.3, reduction="none")
    assert np.all(rows >= 0) and np.min(backward) < 0
    # Extreme logits stay finite, the loss saturates at -log(rho10) for a confident wrong 0 -> 1.
    extreme = np.array([-1e4, 1e4, -80.0, 80.0, 0.0])
    lab = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    rows, grad, _ = propensity_loss(extreme, lab, np.ones(5, bool), estimator="naive", correction="forward",
                                    rho10=0.1, rho01=0.2, reduction="none", return_grad=True)
    assert np.all(np.isfinite(rows)) and np.all(np.isfinite(grad))
    assert abs(rows[0] + np.log(0.1)) < 1e-9 and abs(rows[1] + np.log(0.2)) < 1e-9


def test_mse_base_matches_its_definition():
    f, _, o, p, h = _inputs(seed=13)
    ratings = np.random.default_rng(2).random(f.shape[0])
    s = sigmoid(f)
    loss, grad, _ = propensity_loss(f, ratings, o, p, estimator="ips", base="mse", p_min=0.0, return_grad=True)
    w = o / p
    assert_close(loss, (w * (s - ratings) ** 2).sum() / len(f), 1e-12, "mse ips")
    assert_close(grad, w * 2 * (s - ratings) * s * (1 - s) / len(f), 1e-12, "mse ips gradient")


@pytest.mark.parametrize("kw, match", [
    (dict(base="mse", rho10=0.1), "binary labels"),
    (dict(base="mse", correction="forward"), "binary labels"),
    (dict(correction="sideways"), "correction"),
    (dict(nonnegative="classwise", correction="forward", rho10=0.1), "classwise"),
    (dict(nonnegative="classwise", base="mse"), "classwise"),
    (dict(nonnegative="classwise", reduction="none"), "reduction"),
    (dict(nonnegative="classwise", estimator="dr_jl"), "imputation objective"),
    (dict(nonnegative="classwise", gamma=-1.0), "gamma"),
    (dict(nonnegative="classwise", beta=float("nan")), "beta"),
    (dict(beta=0.1), "classwise"),
    (dict(nonnegative=True, gamma=0.5), "classwise"),
    (dict(nonnegative="yes"), "nonnegative"),
    (dict(return_diagnostics=1), "return_diagnostics"),
])
def test_meaningless_noise_combinations_raise(kw, match):
    f, y, o, p, h = _inputs(50)
    kw = {"estimator": "dr", **kw}
    with pytest.raises((ValueError, TypeError), match=match):
        propensity_loss(f, y, o, p, h if kw["estimator"] in IMPUTED else None, **kw)


def test_mse_rejects_pairs():
    pair = make_inputs(20, "bt")
    with pytest.raises(ValueError, match="logits"):
        propensity_loss(*pair[:4], base="mse", estimator="ips")


# ---------------------------------------------------------------------------------------------
# Diagnostics.


def _expected_diagnostics(f, y, o, p, h, estimator, hyper, **kw):
    w = o / np.maximum(p, P_MIN) if estimator != "naive" else o.astype(np.float64)
    v = estimator_weight(w, estimator, hyper.get("tau"), hyper.get("lambda_"))
    ess = v.sum() ** 2 / (v**2).sum()
    clipped = float(np.mean(p[o] < P_MIN)) if estimator != "naive" else np.nan
    (r1, _, _), (r0, _, _) = class_risks(f, y, o, p, h, estimator=estimator, rho10=RHO10, rho01=RHO01, p_min=P_MIN,
                                         **hyper, **kw)
    return dict(ess=ess, clipped_share=clipped, risk1=r1, risk0=r0)


@pytest.mark.parametrize("estimator", ["naive", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sg_ips", "sg_dr"])
def test_diagnostics_match_their_definitions(estimator):
    a = _inputs(seed=14)
    hyper = HYPER.get(estimator, {})
    (loss, grad, _), diagnostics = _call(estimator, *a, return_grad=True, return_diagnostics=True, **hyper)
    expected = _expected_diagnostics(*a, estimator, hyper)
    assert set(diagnostics) == set(expected)
    for name, value in expected.items():
        if np.isnan(value):
            assert np.isnan(diagnostics[name]), name
        else:
            assert abs(diagnostics[name] - value) <= 1e-10 * max(1.0, abs(value)), (name, diagnostics[name], value)
    assert_close(diagnostics["risk1"] + diagnostics["risk0"], loss, 1e-10, "R_1 + R_0 = loss")
    # Asking for them changes nothing else.
    again = _call(estimator, *a, return_grad=True, **hyper)
    assert float(again[0]) == float(loss) and np.array_equal(again[1], grad)
    assert 0 < diagnostics["ess"] <= len(a[0])


def test_diagnostics_undefined_cases_and_sum_reduction():
    a = _inputs(seed=15)
    _, forward = _call("dr", *a, correction="forward", return_diagnostics=True)
    assert np.isnan(forward["risk1"]) and np.isnan(forward["risk0"]) and forward["ess"] > 0
    _, objective = _call("mrdr", *a, return_diagnostics=True)
    assert np.isnan(objective["risk1"]) and 0 < objective["clipped_share"] < 1
    total, summed = _call("ips", *a, reduction="sum", return_diagnostics=True)
    assert_close(summed["risk1"] + summed["risk0"], total, 1e-10, "sum reduction")
    rows, per_row = _call("ips", *a, reduction="none", return_diagnostics=True)
    assert_close(per_row["risk1"] + per_row["risk0"], rows.sum() / len(rows), 1e-10, "none reports the mean")
    # Every observed propensity below p_min: all clipped, equal weights 1 / p_min: ess = observed.
    f, y, o, _, h = a
    _, low = _call("ips", f, y, o, np.full(len(f), 0.01), h, return_diagnostics=True)
    assert low["clipped_share"] == 1.0 and abs(low["ess"] - o.sum()) < 1e-9


def test_torch_diagnostics():
    torch = pytest.importorskip("torch")
    from fairkernels.torch import CausalRMLoss

    a = _inputs(seed=16)
    t = [torch.tensor(x) for x in a]
    loss_fn = CausalRMLoss("bce", "sg_dr", RHO10, RHO01, P_MIN, lambda_=0.3)
    got = loss_fn.diagnostics(*t)
    _, want = _call("sg_dr", *a, lambda_=0.3, return_diagnostics=True)
    assert got == want
    f = t[0].clone().requires_grad_()
    loss, diagnostics = propensity_loss(f, *t[1:], estimator="sg_dr", lambda_=0.3, rho10=RHO10, rho01=RHO01,
                                        return_diagnostics=True)
    loss.backward()
    assert diagnostics == want and f.grad is not None


@pytest.mark.parametrize("mode", [dict(correction="forward", rho10=0.2, rho01=0.1), dict(base="mse"),
                                  dict(nonnegative="classwise", rho10=0.1, rho01=0.1)], ids=str)
def test_gradcheck_noise_options(mode):
    """float64 gradcheck; the class-wise case where both class risks are positive, the region
    where nnPU's rule is the derivative of the reported loss."""
    torch = pytest.importorskip("torch")
    from fairkernels.torch import CausalRMLoss

    f, y, o, p, h = (torch.tensor(x) for x in make_inputs(12, seed=5))
    o[:4] = True
    if mode.get("base") == "mse":
        y = torch.rand(12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for estimator in ("ips", "snips", "dr", "sndr", "sg_dr", "dr_jl"):
        if mode.get("nonnegative") == "classwise" and estimator == "dr_jl":
            continue
        kw = dict(mode)
        base = kw.pop("base", "bce")
        loss_fn = CausalRMLoss(base, estimator, **kw, **HYPER.get(estimator, {}))
        assert_gradcheck(loss_fn, estimator, f, y, o, p, h)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES, ids=[str(m) for m in MODES])
def test_cuda_noise_options_and_diagnostics_match_cpu(mode):
    """The CUDA twin on the noise options, every estimator, with diagnostics (marked: needs a
    device)."""
    torch = pytest.importorskip("torch")
    base = mode.get("base", "bce")
    inputs = [torch.tensor(x) for x in make_inputs(100_003, base, np.float64, seed=21)]
    if base == "mse":
        inputs[1] = torch.rand(100_003, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rates = {} if base == "mse" else dict(rho10=0.1, rho01=0.25)
    gpu = [x.cuda() for x in inputs]
    for estimator in NOISE_ESTIMATORS:
        for reduction in ("mean", "sum", "none"):
            if not _mode_allowed(mode, estimator, reduction):
                continue
            kw = dict(mode, base=base, estimator=estimator, reduction=reduction, return_grad=True,
                      return_diagnostics=True, **rates, **HYPER.get(estimator, {}))
            want, want_diag = propensity_loss(*inputs[:4], inputs[4] if estimator in IMPUTED else None, **kw)
            got, got_diag = propensity_loss(*gpu[:4], gpu[4] if estimator in IMPUTED else None, **kw)
            for w, g in zip(want, got):
                if w is None:
                    assert g is None
                else:
                    assert_close(g.cpu().numpy(), w.numpy(), 1e-10, f"{kw}")
            for name, value in want_diag.items():
                assert (np.isnan(value) and np.isnan(got_diag[name])) or abs(got_diag[name] - value) <= 1e-10 * max(
                    1.0, abs(value)), (name, kw)


@pytest.mark.cuda
def test_cuda_classwise_flip_rewrites_gradients():
    torch = pytest.importorskip("torch")
    a = [torch.tensor(x) for x in _confident_positives(5000)]
    kw = dict(estimator="dr", rho10=0.05, rho01=0.45, nonnegative="classwise", gamma=0.25, return_grad=True)
    want = propensity_loss(*a, **kw)
    got = propensity_loss(*(x.cuda() for x in a), **kw)
    for w, g in zip(want, got):
        assert_close(g.cpu().numpy(), w.numpy(), 1e-10, "class-wise flip on CUDA")


@pytest.mark.parametrize("options", [
    ("bce", "dr", 0.1, 0.3, 0.1, "mean", "classwise", None, None, "backward", 0.0, 0.5),
    ("bt", "sg_dr", 0.1, 0.2, 0.1, "sum", "classwise", None, 0.3, "backward", 0.01, 1.0),
    ("bce", "sndr", 0.1, 0.2, 0.1, "none", "off", None, None, "forward", None, None),
    ("bt", "mrdr", 0.2, 0.1, 0.1, "mean", "off", None, None, "forward", None, None),
    ("mse", "switch_dr", 0.0, 0.0, 0.1, "mean", "total", 4.0, None, "backward", None, None),
], ids=lambda o: "-".join(map(str, o[:2] + o[6:7] + o[9:10])))
def test_opcheck_noise_options(options):
    torch = pytest.importorskip("torch")
    import fairkernels.torch  # noqa: F401  (registers the ops)

    base, estimator = options[0], options[1]
    f, y, o, p, h = (torch.tensor(x) for x in make_inputs(33, base if base == "bt" else "bce", seed=3))
    if estimator not in IMPUTED:
        h = None
    leaf_h = h.clone().requires_grad_() if h is not None else None
    fused = torch.ops.fairkernels.propensity_loss_fused.default
    forward = torch.ops.fairkernels.propensity_loss.default
    torch.library.opcheck(fused, (f.clone().requires_grad_(), y, o, p, leaf_h, *options))
    torch.library.opcheck(forward, (f, y, o, p, h, *options))
