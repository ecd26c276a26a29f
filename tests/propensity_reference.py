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


def reference_loss(logits, labels, observed, propensity=None, imputed=None, *, base="bce", estimator="ips",
                   rho10=0.0, rho01=0.0, p_min=0.1, reduction="mean", nonnegative=False, tau=None, lambda_=None):
    """Returns (loss, d loss / d logits, d loss / d imputed or None) in float64."""
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
