"""Readable numpy reference of the propensity-weighted, noise-aware loss (float64, no tricks
beyond np.logaddexp for a stable softplus).  Written from the spec, independently of the kernel:
it builds the noise-aware surrogate from its two-case definition and differentiates by hand."""

from __future__ import annotations

import numpy as np


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def base_loss(z, y):
    """BCE with logits for a (soft) label y: y softplus(-z) + (1 - y) softplus(z)."""
    return y * softplus(-z) + (1.0 - y) * softplus(z)


def surrogate(z, y, rho10, rho01):
    """Natarajan et al.'s backward correction, defined on the two label values and extended
    linearly to soft labels."""
    d = 1.0 - rho10 - rho01
    if_one = ((1.0 - rho10) * base_loss(z, 1.0) - rho01 * base_loss(z, 0.0)) / d
    if_zero = ((1.0 - rho01) * base_loss(z, 0.0) - rho10 * base_loss(z, 1.0)) / d
    return y * if_one + (1.0 - y) * if_zero


DOUBLY_ROBUST = ("dr", "sndr", "switch_dr", "dros", "sg_dr")
IMPUTATION_OBJECTIVES = ("dr_jl", "mrdr")


def subgaussian_weight(w, lambda_):
    """Metelli, Russo, Restelli, "Subgaussian and Differentiable Importance Sampling for
    Off-Policy Evaluation and Learning", NeurIPS 2021: the corrected weight
    w_lambda = w / ((1 - lambda) + lambda w), lambda in [0, 1] (lambda = 0: w; lambda = 1: 1 on
    every row with w > 0).  A row with w = 0 keeps weight 0 (the formula is 0 / 0 at lambda = 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w == 0, 0.0, w / ((1.0 - lambda_) + lambda_ * w))


def shrinkage_weight(w, lambda_):
    """Su, Dimakopoulou, Krishnamurthy, Dudik, "Doubly robust off-policy evaluation with
    shrinkage", ICML 2020 (optimistic shrinkage): lambda w / (w^2 + lambda); lambda = inf is w."""
    if np.isinf(lambda_):
        return w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w == 0, 0.0, lambda_ * w / (w * w + lambda_))


def estimator_weight(w, estimator, tau=None, lambda_=None):
    """The weight v each estimator puts in place of w."""
    if estimator == "sndr":
        total = w.sum()
        return w * (w.shape[0] / total) if total > 0 else np.zeros_like(w)
    if estimator == "switch_dr":
        return np.where(w <= tau, w, 0.0)
    if estimator == "dros":
        return shrinkage_weight(w, lambda_)
    if estimator in ("sg_ips", "sg_dr"):
        return subgaussian_weight(w, lambda_)
    return w


def forward_loss(z, t, rho10, rho01):
    """Patrini et al. 2017's forward correction: BCE of the (soft) noisy label t against
    q = (1 - rho01) s + rho10 (1 - s), the model's probability of a noisy 1; returns the loss,
    d/dz and d/dt."""
    s = sigmoid(z)
    with np.errstate(divide="ignore"):
        log_q = np.logaddexp(np.log(1 - rho01) - softplus(-z), np.log(rho10) - softplus(z))
        log_not_q = np.logaddexp(np.log(rho01) - softplus(-z), np.log(1 - rho10) - softplus(z))
    q = np.exp(log_q)
    dq_dz = (1 - rho10 - rho01) * s * (1 - s)
    loss = -t * log_q - (1 - t) * log_not_q
    return loss, (-t / q + (1 - t) / (1 - q)) * dq_dz, log_not_q - log_q


def mse_loss(z, t):
    """(sigmoid(z) - t)^2 and its derivatives in z and t."""
    s = sigmoid(z)
    return (s - t) ** 2, 2 * (s - t) * s * (1 - s), -2 * (s - t)


def reference_loss(logits, labels, observed, propensity=None, imputed=None, *, base="bce", estimator="ips",
                   rho10=0.0, rho01=0.0, p_min=0.1, reduction="mean", nonnegative=False, tau=None, lambda_=None,
                   correction="backward", beta=None, gamma=None):
    """Returns (loss, d loss / d logits, d loss / d imputed or None) in float64."""
    if base == "mse" or correction == "forward":
        return _reference_other_losses(logits, labels, observed, propensity, imputed, base=base, estimator=estimator,
                                       rho10=rho10, rho01=rho01, p_min=p_min, reduction=reduction,
                                       nonnegative=nonnegative, tau=tau, lambda_=lambda_)
    if nonnegative == "classwise":
        return _reference_classwise(logits, labels, observed, propensity, imputed, base=base, estimator=estimator,
                                    rho10=rho10, rho01=rho01, p_min=p_min, reduction=reduction, tau=tau,
                                    lambda_=lambda_, beta=0.0 if beta is None else beta,
                                    gamma=1.0 if gamma is None else gamma)
    f = np.asarray(logits, dtype=np.float64)
    pair = base == "bt" and f.ndim == 2
    z = f[:, 0] - f[:, 1] if pair else f
    y = np.asarray(labels, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    n = z.shape[0]
    d = 1.0 - rho10 - rho01
    lt = surrogate(z, y, rho10, rho01)
    s = sigmoid(z)
    # d/dz of y softplus(-z) + (1-y) softplus(z) is s - y, so for the surrogate:
    dlt = y * ((1 - rho10) * (s - 1) - rho01 * s) / d + (1 - y) * ((1 - rho01) * s - rho10 * (s - 1)) / d
    if estimator == "naive":
        w = o
    else:
        w = o / np.maximum(np.asarray(propensity, dtype=np.float64), p_min)
    dh = None
    v = estimator_weight(w, estimator, tau, lambda_)
    if estimator in DOUBLY_ROBUST + IMPUTATION_OBJECTIVES:
        hh = np.asarray(imputed, dtype=np.float64)
        h = hh[:, 0] - hh[:, 1] if pair else hh
        q = sigmoid(h)
        e = base_loss(z, q)
        de_dz = s - q
        de_dh = (softplus(-z) - softplus(z)) * q * (1 - q)
        if estimator in DOUBLY_ROBUST:
            terms = e + v * (lt - e)
            dz = de_dz + v * (dlt - de_dz)
            dh = (1 - v) * de_dh
        else:
            if estimator == "dr_jl":
                m = w
            else:  # mrdr: (1 - p) / p^2 on observed rows, p clipped at p_min
                pc = np.maximum(np.asarray(propensity, dtype=np.float64), p_min)
                m = o * (1 - pc) / pc**2
            terms = m * (lt - e) ** 2
            dz = 2 * m * (lt - e) * (dlt - de_dz)
            dh = -2 * m * (lt - e) * de_dh
    else:
        terms = v * lt
        dz = v * dlt
    if reduction == "none":
        if nonnegative:
            neg = terms < 0
            terms = np.where(neg, 0.0, terms)
            dz = np.where(neg, 0.0, dz)
            dh = np.where(neg, 0.0, dh) if dh is not None else None
        loss, scale = terms, 1.0
    else:
        total = terms.sum()
        if reduction == "sum":
            norm = 1.0
        elif estimator == "naive":
            norm = o.sum()
        elif estimator == "snips":
            norm = w.sum()
        else:
            norm = float(n)
        loss = total / norm if norm > 0 else 0.0
        scale = 1.0 / norm if norm > 0 else 0.0
        if nonnegative and loss < 0:
            loss, scale = 0.0, 0.0
        loss = np.float64(loss)
    grad_f = dz * scale
    grad_h = dh * scale if dh is not None else None
    if pair:
        grad_f = np.stack([grad_f, -grad_f], axis=1)
        grad_h = np.stack([grad_h, -grad_h], axis=1) if grad_h is not None else None
    return loss, grad_f, grad_h


def overflows(dtype, logits, labels, observed, propensity=None, imputed=None, *, estimator="ips", p_min=0.1,
              reduction="mean", return_grad=False, **options):
    """The overflow rule of the kernels (README, "Numerical edge cases"): True when a weight
    ``o / max(p, p_min)`` is infinite in ``dtype``, or a row term (and, with ``return_grad``, a
    row derivative) is beyond ``dtype``'s range, or their float64 sum is not finite, or the
    reduced loss is beyond ``dtype``'s range.  The kernel then raises ValueError on the CPU."""
    big = np.finfo(dtype).max
    with np.errstate(all="ignore"):
        o = np.asarray(observed, dtype=dtype)
        if estimator != "naive":
            w = o / np.maximum(np.asarray(propensity, dtype=dtype), np.asarray(p_min, dtype=dtype))
            if not np.all(np.isfinite(w)):
                return True
            if estimator == "snips" and reduction == "mean" and not np.isfinite(w.astype(np.float64).sum()):
                return True  # the normaliser, a float64 sum of the weights
        terms, grad_f, grad_h = reference_loss(logits, labels, observed, propensity, imputed, estimator=estimator,
                                               p_min=p_min, reduction="none", **options)
        if np.any(np.abs(terms) > big) or not np.isfinite(terms.sum()):
            return True
        if return_grad and (np.any(np.abs(grad_f) > big) or (grad_h is not None and np.any(np.abs(grad_h) > big))):
            return True
        if reduction == "none":
            return False
        loss, _, _ = reference_loss(logits, labels, observed, propensity, imputed, estimator=estimator, p_min=p_min,
                                    reduction=reduction, **options)
        return bool(abs(loss) > big)


def _normaliser(estimator, reduction, o, w, n):
    if reduction == "sum":
        return 1.0
    if estimator == "naive":
        return o.sum()
    if estimator == "snips":
        return w.sum()
    return float(n)


def _weights(estimator, o, propensity, p_min, tau, lambda_):
    w = o if estimator == "naive" else o / np.maximum(np.asarray(propensity, dtype=np.float64), p_min)
    return w, estimator_weight(w, estimator, tau, lambda_)


def _reduce(terms, dz, dh, estimator, reduction, nonnegative, o, w, pair):
    n = terms.shape[0]
    if reduction == "none":
        if nonnegative:
            neg = terms < 0
            terms, dz = np.where(neg, 0.0, terms), np.where(neg, 0.0, dz)
            dh = np.where(neg, 0.0, dh) if dh is not None else None
        loss, scale = terms, 1.0
    else:
        norm = _normaliser(estimator, reduction, o, w, n)
        loss = terms.sum() / norm if norm > 0 else 0.0
        scale = 1.0 / norm if norm > 0 else 0.0
        if nonnegative and loss < 0:
            loss, scale = 0.0, 0.0
        loss = np.float64(loss)
    grad_f, grad_h = dz * scale, (dh * scale if dh is not None else None)
    if pair:
        grad_f = np.stack([grad_f, -grad_f], axis=1)
        grad_h = np.stack([grad_h, -grad_h], axis=1) if grad_h is not None else None
    return loss, grad_f, grad_h


def _reference_other_losses(logits, labels, observed, propensity, imputed, *, base, estimator, rho10, rho01, p_min,
                            reduction, nonnegative, tau, lambda_):
    """The forward correction and the mse base: the estimators combine the row loss L against
    the noisy label with the same loss e against the imputed label sigmoid(h)."""
    f = np.asarray(logits, dtype=np.float64)
    pair = f.ndim == 2
    z = f[:, 0] - f[:, 1] if pair else f
    y = np.asarray(labels, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    loss_fn = mse_loss if base == "mse" else (lambda zz, t: forward_loss(zz, t, rho10, rho01))
    L, dL, _ = loss_fn(z, y)
    w, v = _weights(estimator, o, propensity, p_min, tau, lambda_)
    dh = None
    if estimator in DOUBLY_ROBUST + IMPUTATION_OBJECTIVES:
        hh = np.asarray(imputed, dtype=np.float64)
        q = sigmoid(hh[:, 0] - hh[:, 1] if pair else hh)
        e, de_dz, de_dq = loss_fn(z, q)
        de_dh = de_dq * q * (1 - q)
        if estimator in DOUBLY_ROBUST:
            terms, dz, dh = e + v * (L - e), de_dz + v * (dL - de_dz), (1 - v) * de_dh
        else:
            pc = np.maximum(np.asarray(propensity, dtype=np.float64), p_min)
            m = w if estimator == "dr_jl" else o * (1 - pc) / pc**2
            terms, dz, dh = m * (L - e) ** 2, 2 * m * (L - e) * (dL - de_dz), -2 * m * (L - e) * de_dh
    else:
        terms, dz = v * L, v * dL
    return _reduce(terms, dz, dh, estimator, reduction, nonnegative, o, w, pair)


def class_risks(logits, labels, observed, propensity=None, imputed=None, *, base="bce", estimator="ips", rho10=0.0,
                rho01=0.0, p_min=0.1, reduction="mean", tau=None, lambda_=None):
    """R_1 and R_0 (the parts of the backward-corrected risk in l(z, 1) and l(z, 0)) with their
    gradients in z and h: the risk evaluated with l(z, 0) := 0, and with l(z, 1) := 0.  Returns
    [(R_c, dR_c/dz, dR_c/dh or None) for c = 1, 0]."""
    f = np.asarray(logits, dtype=np.float64)
    pair = f.ndim == 2
    z = f[:, 0] - f[:, 1] if pair else f
    y = np.asarray(labels, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    d = 1.0 - rho10 - rho01
    w, v = _weights(estimator, o, propensity, p_min, tau, lambda_)
    norm = _normaliser(estimator, "sum" if reduction == "sum" else "mean", o, w, z.shape[0])
    inv = 1.0 / norm if norm > 0 else 0.0
    s = sigmoid(z)
    dr = estimator in DOUBLY_ROBUST
    q = None
    if dr:
        hh = np.asarray(imputed, dtype=np.float64)
        q = sigmoid(hh[:, 0] - hh[:, 1] if pair else hh)
    out = []
    # class 1: l(z, 1) = softplus(-z), surrogate coefficient (y (1 - rho10) - (1 - y) rho10) / d
    for loss_c, dloss_c, coef_label, imputed_share in (
        (softplus(-z), s - 1, (y * (1 - rho10) - (1 - y) * rho10) / d, (lambda qq: qq)),
        (softplus(z), s, ((1 - y) * (1 - rho01) - y * rho01) / d, (lambda qq: 1 - qq)),
    ):
        coef = v * coef_label + ((1 - v) * imputed_share(q) if dr else 0.0)
        risk = float((coef * loss_c).sum() * inv)
        d_z = coef * dloss_c * inv
        d_h = None
        if dr:
            sign = 1.0 if imputed_share(1.0) == 1.0 else -1.0
            d_h = sign * (1 - v) * q * (1 - q) * loss_c * inv
        out.append((risk, d_z, d_h))
    return out


def _reference_classwise(logits, labels, observed, propensity, imputed, *, base, estimator, rho10, rho01, p_min,
                         reduction, tau, lambda_, beta, gamma):
    """max(0, R_1) + max(0, R_0) with nnPU's gradient rule per class (Kiryo et al. 2017): the
    gradient of R_c where R_c >= -beta, else -gamma times it."""
    pair = np.asarray(logits).ndim == 2
    classes = class_risks(logits, labels, observed, propensity, imputed, base=base, estimator=estimator,
                          rho10=rho10, rho01=rho01, p_min=p_min, reduction=reduction, tau=tau, lambda_=lambda_)
    loss = np.float64(sum(max(0.0, risk) for risk, _, _ in classes))
    grad_f = sum((1.0 if risk >= -beta else -gamma) * d_z for risk, d_z, _ in classes)
    grad_h = None
    if classes[0][2] is not None:
        grad_h = sum((1.0 if risk >= -beta else -gamma) * d_h for risk, _, d_h in classes)
    if pair:
        grad_f = np.stack([grad_f, -grad_f], axis=1)
        grad_h = np.stack([grad_h, -grad_h], axis=1) if grad_h is not None else None
    return loss, grad_f, grad_h
