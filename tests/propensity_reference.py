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


def reference_loss(logits, labels, observed, propensity=None, imputed=None, *, base="bce", estimator="ips",
                   rho10=0.0, rho01=0.0, p_min=0.1, reduction="mean", nonnegative=False):
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
    if estimator == "dr":
        hh = np.asarray(imputed, dtype=np.float64)
        h = hh[:, 0] - hh[:, 1] if pair else hh
        q = sigmoid(h)
        e = base_loss(z, q)
        terms = e + w * (lt - e)
        dz = (s - q) + w * (dlt - (s - q))
        dh = (1 - w) * (softplus(-z) - softplus(z)) * q * (1 - q)
    else:
        terms = w * lt
        dz = w * dlt
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
