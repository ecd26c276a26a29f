"""Propensity-weighted, noise-aware losses for learning from observational feedback (CausalRM).

The public function is :func:`propensity_loss`.  numpy arrays and CPU torch tensors run on the
C++ kernel (cpp/propensity.cc); CUDA torch tensors and CuPy arrays on the CUDA kernel
(cuda/propensity.cu), on the caller's current stream.  torch users who need autograd use
``fairkernels.torch.CausalRMLoss``; this module never imports torch.

Formulas (row i; ``z`` the logit, or for ``base="bt"`` the difference first - second):

* base loss ``l(z, y) = y softplus(-z) + (1 - y) softplus(z)`` (BCE with logits, stable);
* noise-aware surrogate (backward correction, Natarajan et al. 2013) with the flip rates
  ``rho10 = P(noisy label 1 | clean label 0)`` and ``rho01 = P(noisy label 0 | clean label 1)``
  (the paper's naming; some public code swaps the order):
  ``l~(z, y) = ((y - rho10) softplus(-z) + (1 - y - rho01) softplus(z)) / (1 - rho10 - rho01)``;
* weights ``w_i = o_i / max(p_i, p_min)``;
* estimators: ``naive`` mean of l~ over observed rows; ``ips`` ``sum w l~ / N``;
  ``snips`` ``sum w l~ / sum w``; ``dr`` ``sum [e + w (l~ - e)] / N`` with the imputed loss
  ``e = l(z, sigmoid(h))`` against the imputation logit ``h``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Optional, Tuple, Union

from . import _arrays
from ._arrays import ArrayView
from ._backend import cuda_call_arguments, kernels_for

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

BASES = ("bce", "bt")
ESTIMATORS = ("naive", "ips", "snips", "dr")
REDUCTIONS = ("mean", "sum", "none")
_ESTIMATOR_CODES = {name: code for code, name in enumerate(ESTIMATORS)}
_REDUCTION_CODES = {name: code for code, name in enumerate(REDUCTIONS)}


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


@dataclass(frozen=True)
class PropensityOptions:
    """The scalar options of :func:`propensity_loss`, validated once."""

    base: str = "bce"
    estimator: str = "ips"
    rho10: float = 0.0
    rho01: float = 0.0
    p_min: float = 0.1
    reduction: str = "mean"
    nonnegative: bool = False

    def __post_init__(self) -> None:
        _choice(self.base, "base", BASES)
        _choice(self.estimator, "estimator", ESTIMATORS)
        _choice(self.reduction, "reduction", REDUCTIONS)
        for name in ("rho10", "rho01"):
            value = _real(getattr(self, name), name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
            object.__setattr__(self, name, value)
        if not 1.0 - self.rho10 - self.rho01 > 0.0:
            raise ValueError(
                f"rho10 + rho01 must be < 1 (the correction divides by 1 - rho10 - rho01), got "
                f"rho10={self.rho10}, rho01={self.rho01}"
            )
        p_min = _real(self.p_min, "p_min")
        if not 0.0 <= p_min <= 1.0:
            raise ValueError(f"p_min must lie in [0, 1], got {p_min}")
        object.__setattr__(self, "p_min", p_min)
        if not isinstance(self.nonnegative, bool):
            raise TypeError(f"nonnegative must be a bool, got {type(self.nonnegative).__name__}")

    def as_tuple(self) -> tuple:
        return (self.base, self.estimator, self.rho10, self.rho01, self.p_min, self.reduction, self.nonnegative)


@dataclass(frozen=True)
class _Checked:
    """Validated, contiguous views of one call, ready for the kernel."""

    logits: ArrayView
    labels: ArrayView
    observed: ArrayView
    propensity: Optional[ArrayView]
    imputed: Optional[ArrayView]
    pairwise: bool

    @property
    def n_rows(self) -> int:
        return self.logits.shape[0]


def _allowed_floats(v: ArrayView) -> tuple[str, ...]:
    return _arrays.FLOAT_DTYPES if v.on_cuda else _arrays.CPU_FLOAT_DTYPES


def logits_shape_ok(shape: tuple, base: str) -> bool:
    """[N] for bce; [N, 2] (first, second) or [N] (the difference) for bt."""
    return len(shape) == 1 or (base == "bt" and len(shape) == 2 and shape[1] == 2)


def check_arrays(logits, labels, observed, propensity, imputed_logits, options: PropensityOptions) -> _Checked:
    """Validates shapes, dtypes and devices and converts only where documented (labels,
    propensity and imputed_logits to the logits' dtype; observed of another float or integer
    dtype too).  Array contents (NaN, ranges) are checked by the kernel in its single pass."""
    f = _arrays.view(logits, "logits")
    if f.dtype not in _allowed_floats(f):
        raise TypeError(f"logits must have dtype {' or '.join(_allowed_floats(f))} here, got {f.dtype}")
    if not logits_shape_ok(f.shape, options.base):
        expected = "[N] or [N, 2]" if options.base == "bt" else "[N]"
        raise ValueError(f"logits must have shape {expected} for base={options.base!r}, got {f.shape}")
    f = _arrays.contiguous(f)
    n = f.shape[0]
    y = _row_vector(labels, "labels", f, n)
    if y.dtype != f.dtype:
        y = _arrays.astype(y, f.dtype)
    o = _row_vector(observed, "observed", f, n)
    if o.dtype not in ("bool", "uint8", f.dtype):
        o = _arrays.astype(o, f.dtype)  # integers too: 256 must not wrap to a valid 0
    p = None
    if propensity is not None:
        p = _row_vector(propensity, "propensity", f, n)
        if p.dtype != f.dtype:
            p = _arrays.astype(p, f.dtype)
    elif options.estimator != "naive":
        raise ValueError(f"propensity is required by estimator={options.estimator!r}")
    h = None
    if options.estimator == "dr":
        if imputed_logits is None:
            raise ValueError("imputed_logits are required by estimator='dr'")
        h = _arrays.view(imputed_logits, "imputed_logits")
        _arrays.same_place(f, h)
        if h.shape != f.shape:
            raise ValueError(f"imputed_logits must have the shape of logits {f.shape}, got {h.shape}")
        h = _arrays.astype(h, f.dtype) if h.dtype != f.dtype else _arrays.contiguous(h)
    elif imputed_logits is not None:
        raise ValueError(f"imputed_logits are only used by estimator='dr', not {options.estimator!r}")
    return _Checked(f, y, o, p, h, len(f.shape) == 2)


def _row_vector(x: Any, name: str, f: ArrayView, n: int) -> ArrayView:
    v = _arrays.view(x, name)
    _arrays.same_place(f, v)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one value per row of logits), got {v.shape}")
    return _arrays.contiguous(v)


def _grad_prescale(options: PropensityOptions, n_rows: int) -> float:
    """1/N for the "mean" of ips and dr (normaliser known in advance), else 1."""
    if options.reduction == "mean" and options.estimator in ("ips", "dr") and n_rows > 0:
        return 1.0 / n_rows
    return 1.0


def compute_propensity_loss(
    logits, labels, observed, propensity, imputed_logits, options: PropensityOptions, want_grad: bool
) -> tuple[Array, Optional[Array], Optional[Array], Optional[Array]]:
    """Validates, allocates and runs the kernel.  Returns (loss, grad_scale, grad_logits,
    grad_imputed) where d loss / d logits = grad_scale * grad_logits (elementwise for
    reduction "none", where grad_scale is 1).  Where the normaliser of "mean" is known before
    the pass (ips and dr: N) the kernel already applies it and grad_scale is 1 (0 when the
    non-negative clamp is active), so the common case needs no second pass over the gradients.
    The gradients are None unless want_grad; grad_imputed is None unless estimator "dr"."""
    c = check_arrays(logits, labels, observed, propensity, imputed_logits, options)
    f = c.logits
    per_row = options.reduction == "none"
    loss = _arrays.empty(f, (c.n_rows,) if per_row else (), f.dtype, "loss")
    scale = df = dh = None
    if want_grad:
        scale = _arrays.empty(f, (), f.dtype, "grad_scale")
        df = _arrays.empty(f, f.shape, f.dtype, "grad_logits")
        if c.imputed is not None:
            dh = _arrays.empty(f, f.shape, f.dtype, "grad_imputed")

    def address(v: Optional[ArrayView]) -> int:
        return v.address if v is not None else 0

    args = {
        "logits": f.address,
        "labels": c.labels.address,
        "observed": c.observed.address,
        "propensity": address(c.propensity),
        "imputed": address(c.imputed),
        "loss": loss.address,
        "grad_scale": address(scale),
        "grad_logits": address(df),
        "grad_imputed": address(dh),
        "dtype": _arrays.DTYPE_CODES[f.dtype],
        "observed_dtype": _arrays.DTYPE_CODES[c.observed.dtype],
        "n_rows": c.n_rows,
        "pairwise": c.pairwise,
        "estimator": _ESTIMATOR_CODES[options.estimator],
        "reduction": _REDUCTION_CODES[options.reduction],
        "rho10": options.rho10,
        "rho01": options.rho01,
        "p_min": options.p_min,
        "nonnegative": options.nonnegative,
        "want_grad": want_grad,
        "grad_prescale": _grad_prescale(options, c.n_rows),
        **cuda_call_arguments(f),
    }
    kernels_for(f).propensity_loss(args)

    def array(v: Optional[ArrayView]) -> Optional[Array]:
        return v.array if v is not None else None

    return loss.array, array(scale), array(df), array(dh)


def propensity_loss(
    logits: Array,
    labels: Array,
    observed: Array,
    propensity: Optional[Array] = None,
    imputed_logits: Optional[Array] = None,
    *,
    base: Literal["bce", "bt"] = "bce",
    estimator: Literal["naive", "ips", "snips", "dr"] = "ips",
    rho10: float = 0.0,
    rho01: float = 0.0,
    p_min: float = 0.1,
    reduction: Literal["mean", "sum", "none"] = "mean",
    nonnegative: bool = False,
    return_grad: bool = False,
) -> Union[Array, Tuple[Array, Array, Optional[Array]]]:
    """Propensity-weighted, noise-aware loss of a reward model on observational feedback.

    Args:
        logits: reward-model logits. ``base="bce"``: ``[N]``.  ``base="bt"``: ``[N, 2]``
            (first, second response of each pair; label 1 means the first won), or ``[N]``
            holding the difference first - second (then identical to "bce").  float32/float64
            (also float16/bfloat16 on CUDA, computed in float32).
        labels: ``[N]`` noisy labels in [0, 1] (soft labels allowed).  Labels of unobserved
            rows are never used but must still lie in [0, 1] (fill them with 0).
        observed: ``[N]`` 1 where feedback was given, 0 elsewhere (bool, uint8 or float).
        propensity: ``[N]`` P(observed | x) in (0, 1]; clipped below at ``p_min``.  Required
            by ips, snips and dr; ignored (not read) by naive.
        imputed_logits: the imputation model's logits, same shape as ``logits``; dr only.
        base: "bce" (pointwise) or "bt" (pairwise Bradley-Terry).
        estimator: "naive" (mean over observed rows), "ips", "snips" or "dr" (see module doc).
        rho10: label flip rate P(noisy 1 | clean 0).  rho10 = rho01 = 0: no correction.
        rho01: label flip rate P(noisy 0 | clean 1).  Needs 1 - rho10 - rho01 > 0.
        p_min: propensities below it are raised to it (weights at most 1 / p_min).  With
            ``p_min=0`` a tiny (e.g. denormal) propensity can make a weight overflow the
            dtype: that is an error, see below.
        reduction: "mean" (the estimator's value: divided by the observed count for naive, by
            N for ips and dr, by the sum of weights for snips), "sum" (sum of the row terms,
            not normalised) or "none" (the row terms: ``w_i l~_i``, or ``e_i + w_i (l~_i - e_i)``
            for dr).
        nonnegative: clamp the reduced loss at 0 (gradient 0 when clamped; per row for
            "none").  The noise-corrected loss can be negative, and minimising a negative risk
            with a flexible model diverges.
        return_grad: also return the gradients of the loss (of the sum of the rows for "none").

    Returns:
        The loss (0-d array, or ``[N]`` for "none") in the library, device and dtype of
        ``logits``; with ``return_grad`` the tuple ``(loss, grad_logits, grad_imputed)``, where
        ``grad_imputed`` is None except for dr.

    Defined edge cases: empty input gives loss 0.  A batch without observed rows gives 0 and
    zero gradients for naive, ips and snips (nothing to learn from); dr then gives the mean
    imputed loss.  Invalid contents (NaN / inf logits, labels outside [0, 1], observed not
    0/1, propensity outside (0, 1]) raise ValueError naming the argument on the CPU; on CUDA,
    where raising would need a device synchronisation, they make the loss NaN.  So do valid
    contents that overflow the dtype: a weight ``o / max(p, p_min)``, a row loss or (with
    gradients) a row derivative beyond the dtype, a float64 sum that overflows, or a reduced
    loss beyond the dtype (ValueError "... overflows the logits' dtype ..." on the CPU).
    """
    options = PropensityOptions(base, estimator, rho10, rho01, p_min, reduction, nonnegative)
    if _arrays.is_torch_tensor(logits):
        from ._propensity_ops import propensity_loss_torch

        if return_grad:
            return propensity_loss_torch(logits, labels, observed, propensity, imputed_logits, options, True)
        return propensity_loss_torch(logits, labels, observed, propensity, imputed_logits, options, False)[0]
    loss, scale, df, dh = compute_propensity_loss(
        logits, labels, observed, propensity, imputed_logits, options, return_grad
    )
    if not return_grad:
        return loss
    if reduction != "none":
        df = df * scale
        dh = dh * scale if dh is not None else None
    return loss, df, dh
