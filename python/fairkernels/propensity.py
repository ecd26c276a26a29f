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
  ``e = l(z, sigmoid(h))`` against the imputation logit ``h``;
* beyond the paper (off-policy estimators as training losses): ``sndr``
  ``sum e / N + sum w (l~ - e) / sum w``; ``switch_dr`` (``tau``) dr with ``w 1{w <= tau}``;
  ``dros`` (``lambda_``, Su et al. 2020) dr with ``lambda w / (w^2 + lambda)``; ``sg_ips`` /
  ``sg_dr`` (``lambda_`` in [0, 1], Metelli et al. 2021) ips / dr with
  ``w / (1 - lambda + lambda w)``;
* imputation-model objectives (train the imputation logits ``h`` with them): ``dr_jl``
  ``sum w (l~ - e)^2 / N`` and ``mrdr`` ``sum o (1 - pc) / pc^2 (l~ - e)^2 / N`` with
  ``pc = max(p, p_min)``.  ``l~`` is the row loss the estimators use (the plain loss when no
  noise correction is asked for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from . import _arrays, _core
from ._arrays import ArrayView
from ._backend import launch
from ._options import boolean, choice, enum_value, members, real

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

BASES = ("bce", "bt", "mse")
CORRECTIONS = ("backward", "forward")
DIAGNOSTICS = tuple(_core.PROPENSITY_DIAGNOSTICS)  # ("ess", "clipped_share", "risk1", "risk0")
ESTIMATORS = tuple(_core.Estimator.__members__)
REDUCTIONS = tuple(_core.Reduction.__members__)
# Estimators that read the imputation logits (and give them a gradient).
IMPUTED_ESTIMATORS = ("dr", "sndr", "switch_dr", "dros", "sg_dr", "dr_jl", "mrdr")
# The hyper-parameter each estimator needs, if any.
_TAU_ESTIMATORS = ("switch_dr",)
_LAMBDA_ESTIMATORS = ("dros", "sg_ips", "sg_dr")

EstimatorName = Literal["naive", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sg_ips", "sg_dr", "dr_jl",
                        "mrdr"]


@dataclass(frozen=True)
class PropensityOptions:
    """The scalar options of :func:`propensity_loss`, validated once."""

    base: str = "bce"
    estimator: str = "ips"
    rho10: float = 0.0
    rho01: float = 0.0
    p_min: float = 0.1
    reduction: str = "mean"
    nonnegative: Union[bool, str] = False
    tau: Optional[float] = None
    lambda_: Optional[float] = None
    correction: str = "backward"
    beta: Optional[float] = None
    gamma: Optional[float] = None

    def __post_init__(self) -> None:
        choice(self.base, "base", BASES)
        choice(self.correction, "correction", CORRECTIONS)
        enum_value(_core.Estimator, self.estimator, "estimator")
        enum_value(_core.Reduction, self.reduction, "reduction")
        for name in ("rho10", "rho01"):
            object.__setattr__(self, name, real(getattr(self, name), name, 0.0, 1.0, open_high=True))
        if not 1.0 - self.rho10 - self.rho01 > 0.0:
            raise ValueError(
                f"rho10 + rho01 must be < 1 (the correction divides by 1 - rho10 - rho01), got "
                f"rho10={self.rho10}, rho01={self.rho01}"
            )
        object.__setattr__(self, "p_min", real(self.p_min, "p_min", 0.0, 1.0))
        if self.nonnegative != "classwise" and not isinstance(self.nonnegative, bool):
            raise TypeError(f"nonnegative must be False, True or 'classwise', got {self.nonnegative!r}")
        self._check_hyper_parameters()
        self._check_noise_options()

    def _check_noise_options(self) -> None:
        """The combinations that mean nothing are errors rather than silently ignored."""
        noisy = self.rho10 != 0.0 or self.rho01 != 0.0
        if self.base == "mse" and noisy:
            raise ValueError("base='mse' takes ratings in [0, 1]: the noise correction is defined for binary labels "
                             f"only, so rho10 and rho01 must be 0 (got rho10={self.rho10}, rho01={self.rho01})")
        if self.base == "mse" and self.correction != "backward":
            raise ValueError("correction='forward' is defined for binary labels (bce / bt), not base='mse'")
        if self.nonnegative == "classwise":
            if self.base == "mse" or self.correction == "forward":
                raise ValueError("nonnegative='classwise' splits the backward-corrected bce / bt risk into R_1 + R_0: "
                                 "not defined for base='mse' or correction='forward' (non-negative rows already)")
            if self.reduction == "none":
                raise ValueError("nonnegative='classwise' is a rule on the reduced risk: reduction must be 'mean' or "
                                 "'sum', not 'none'")
            if self.estimator in ("dr_jl", "mrdr"):
                raise ValueError(f"nonnegative='classwise' applies to risk estimators, not to the imputation "
                                 f"objective {self.estimator!r} (a weighted square, never negative)")
            object.__setattr__(self, "beta", real(0.0 if self.beta is None else self.beta, "beta", 0.0))
            object.__setattr__(self, "gamma", real(1.0 if self.gamma is None else self.gamma, "gamma", 0.0))
        elif self.beta is not None or self.gamma is not None:
            raise ValueError("beta and gamma are the parameters of nonnegative='classwise' (nnPU's gradient rule); "
                             f"they mean nothing with nonnegative={self.nonnegative!r}")

    @property
    def loss_kind(self) -> str:
        """The kernel's LossKind: surrogate (backward correction), forward or mse."""
        if self.base == "mse":
            return "mse"
        return "forward" if self.correction == "forward" else "surrogate"

    @property
    def nonnegative_mode(self) -> str:
        """The kernel's NonNegative: off, total (True) or classwise."""
        if self.nonnegative == "classwise":
            return "classwise"
        return "total" if self.nonnegative else "off"

    def _check_hyper_parameters(self) -> None:
        """tau is required by switch_dr and lambda_ by dros / sg_ips / sg_dr; giving either to an
        estimator that does not use it is an error (it would silently do nothing)."""
        for name, users in (("tau", _TAU_ESTIMATORS), ("lambda_", _LAMBDA_ESTIMATORS)):
            value = getattr(self, name)
            if self.estimator in users and value is None:
                raise ValueError(f"{name} is required by estimator={self.estimator!r}")
            if self.estimator not in users and value is not None:
                raise ValueError(f"{name} is only used by estimator {' / '.join(map(repr, users))}, "
                                 f"not by {self.estimator!r}")
        if self.tau is not None:  # the threshold may be inf (switch_dr = dr)
            object.__setattr__(self, "tau", real(self.tau, "tau", 0.0, finite=False))
        if self.lambda_ is not None:
            if self.estimator == "dros":  # lambda_ = inf: no shrinkage (dros = dr)
                object.__setattr__(self, "lambda_", real(self.lambda_, "lambda_", 0.0, finite=False))
            else:
                object.__setattr__(self, "lambda_", real(self.lambda_, "lambda_", 0.0, 1.0))

    def as_tuple(self) -> tuple:
        """The options as the custom ops take them (nonnegative as a string: the op schema has
        one type per argument)."""
        return (self.base, self.estimator, self.rho10, self.rho01, self.p_min, self.reduction,
                self.nonnegative_mode, self.tau, self.lambda_, self.correction, self.beta, self.gamma)

    @classmethod
    def from_op(cls, base, estimator, rho10, rho01, p_min, reduction, nonnegative_mode, tau, lambda_, correction,
                beta, gamma) -> PropensityOptions:
        """The inverse of as_tuple (inside the custom ops)."""
        modes: dict[str, Union[bool, str]] = {"off": False, "total": True, "classwise": "classwise"}
        if nonnegative_mode not in modes:
            raise ValueError(f"nonnegative must be one of False, True, 'classwise', got {nonnegative_mode!r}")
        return cls(base, estimator, rho10, rho01, p_min, reduction, modes[nonnegative_mode], tau, lambda_,
                   correction, beta, gamma)


@dataclass(frozen=True)
class _Checked:
    """The array arguments of one call, as the kernel takes them."""

    logits: ArrayView
    labels: ArrayView
    observed: ArrayView
    propensity: Optional[ArrayView]
    imputed: Optional[ArrayView]
    pairwise: bool

    @property
    def n_rows(self) -> int:
        return self.logits.shape[0]


def _float_dtypes(v: ArrayView) -> tuple[str, ...]:
    return _arrays.FLOAT_DTYPES if v.on_cuda else _arrays.CPU_FLOAT_DTYPES


def logits_shape_ok(shape: tuple, base: str) -> bool:
    """[N] for bce; [N, 2] (first, second) or [N] (the difference) for bt."""
    return len(shape) == 1 or (base == "bt" and len(shape) == 2 and shape[1] == 2)


def check_arrays(logits, labels, observed, propensity, imputed_logits, options: PropensityOptions) -> _Checked:
    """Every array argument through the input layer (_arrays.take): as is, converted once (labels,
    propensity and imputed_logits to the logits' dtype; observed of another float or integer
    dtype too), or a clear error.  Array contents (NaN, ranges) are checked by the kernel in its
    single pass."""
    f = _arrays.view(logits, "logits")
    if not logits_shape_ok(tuple(f.shape), options.base):
        expected = "[N] or [N, 2]" if options.base == "bt" else "[N]"
        got = "a 0-d array" if not f.shape else f"shape {tuple(f.shape)}"
        raise ValueError(f"logits must have shape {expected} for base={options.base!r}, got {got}")
    f = _arrays.accept(f, shape=(None,) * len(f.shape), dtypes=_float_dtypes(f))
    n = f.shape[0]
    rows = f" (one value per row of logits: N = {n})"
    same_float = {"float": f.dtype}
    y = _arrays.take(labels, "labels", like=f, shape=(n,), dtypes=(f.dtype,), convert=same_float, context=rows)
    # Integers are converted to the float dtype, so that 256 cannot wrap to a valid 0.
    o = _arrays.take(observed, "observed", like=f, shape=(n,), dtypes=("bool", "uint8", f.dtype),
                     convert={"float": f.dtype, "int": f.dtype}, context=rows)
    p = None
    if propensity is not None:
        p = _arrays.take(propensity, "propensity", like=f, shape=(n,), dtypes=(f.dtype,), convert=same_float,
                         context=rows)
    elif options.estimator != "naive":
        raise ValueError(f"propensity is required by estimator={options.estimator!r}")
    h = None
    if options.estimator in IMPUTED_ESTIMATORS:
        if imputed_logits is None:
            raise ValueError(f"imputed_logits are required by estimator={options.estimator!r}")
        h = _arrays.take(imputed_logits, "imputed_logits", like=f, shape=tuple(f.shape), dtypes=(f.dtype,),
                         convert=same_float, context=" (the shape of logits)")
    elif imputed_logits is not None:
        raise ValueError(f"imputed_logits are only used by estimators {', '.join(IMPUTED_ESTIMATORS)}, "
                         f"not {options.estimator!r}")
    return _Checked(f, y, o, p, h, len(f.shape) == 2)


def _grad_prescale(options: PropensityOptions, n_rows: int) -> float:
    """1/N for the "mean" of every estimator but naive and snips (normaliser N, known in
    advance), else 1."""
    if options.reduction == "mean" and options.estimator not in ("naive", "snips") and n_rows > 0:
        return 1.0 / n_rows
    return 1.0


def _kernel_options(c: _Checked, options: PropensityOptions, want_grad: bool) -> Any:
    """The kernel's PropensityOptions (cpp/propensity.h), filled field by field."""
    o = _core.PropensityOptions()
    o.n_rows = c.n_rows
    o.pairwise = c.pairwise
    o.estimator = members(_core.Estimator)[options.estimator]
    o.reduction = members(_core.Reduction)[options.reduction]
    o.rho10 = options.rho10
    o.rho01 = options.rho01
    o.p_min = options.p_min
    o.nonnegative = members(_core.NonNegative)[options.nonnegative_mode]
    o.loss = members(_core.LossKind)[options.loss_kind]
    o.nn_beta = options.beta if options.beta is not None else 0.0
    o.nn_gamma = options.gamma if options.gamma is not None else 1.0
    o.want_grad = want_grad
    o.grad_prescale = _grad_prescale(options, c.n_rows)
    o.tau = options.tau if options.tau is not None else math.inf
    o.lambda_ = options.lambda_ if options.lambda_ is not None else 0.0
    return o


def compute_propensity_loss(
    logits, labels, observed, propensity, imputed_logits, options: PropensityOptions, want_grad: bool,
    diagnostics: Optional[dict] = None,
) -> tuple[Array, Optional[Array], Optional[Array], Optional[Array]]:
    """Validates, allocates and runs the kernel.  Returns (loss, grad_scale, grad_logits,
    grad_imputed) where d loss / d logits = grad_scale * grad_logits (elementwise for
    reduction "none", where grad_scale is 1).  Where the normaliser of "mean" is known before
    the pass (ips and dr: N) the kernel already applies it and grad_scale is 1 (0 when the
    non-negative clamp is active), so the common case needs no second pass over the gradients.
    The gradients are None unless want_grad; grad_imputed is None unless the estimator reads
    imputed_logits (IMPUTED_ESTIMATORS).  A dict passed as diagnostics receives the diagnostics
    (DIAGNOSTICS, as Python floats: on CUDA reading them synchronises the stream)."""
    c = check_arrays(logits, labels, observed, propensity, imputed_logits, options)
    f = c.logits
    loss = _arrays.fresh(f, (c.n_rows,) if options.reduction == "none" else (), f.dtype, "loss")
    scale = df = dh = None
    if want_grad:
        scale = _arrays.fresh(f, (), f.dtype, "grad_scale")
        df = _arrays.fresh(f, f.shape, f.dtype, "grad_logits")
        if c.imputed is not None:
            dh = _arrays.fresh(f, f.shape, f.dtype, "grad_imputed")
    a = _core.PropensityArrays()
    a.logits, a.labels, a.observed = f.address, c.labels.address, c.observed.address
    a.propensity, a.imputed = _arrays.address_of(c.propensity), _arrays.address_of(c.imputed)
    a.loss = loss.address
    a.grad_scale, a.grad_logits, a.grad_imputed = (_arrays.address_of(v) for v in (scale, df, dh))
    a.dtype = _arrays.DTYPES[f.dtype]
    a.observed_dtype = _arrays.DTYPES[c.observed.dtype]
    diag = None
    if diagnostics is not None:
        diag = _arrays.fresh(f, (_core.PROPENSITY_DIAGNOSTICS_SIZE,), "float64", "diagnostics")
        a.diagnostics = diag.address
    launch("propensity_loss", f, a, _kernel_options(c, options, want_grad))
    if diag is not None and diagnostics is not None:
        values = diag.array.tolist()
        diagnostics.update(zip(DIAGNOSTICS, (float(v) for v in values)))

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
    base: Literal["bce", "bt", "mse"] = "bce",
    estimator: EstimatorName = "ips",
    rho10: float = 0.0,
    rho01: float = 0.0,
    p_min: float = 0.1,
    reduction: Literal["mean", "sum", "none"] = "mean",
    nonnegative: Union[bool, Literal["classwise"]] = False,
    tau: Optional[float] = None,
    lambda_: Optional[float] = None,
    correction: Literal["backward", "forward"] = "backward",
    beta: Optional[float] = None,
    gamma: Optional[float] = None,
    return_grad: bool = False,
    return_diagnostics: bool = False,
) -> Any:
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
        imputed_logits: the imputation model's logits, same shape as ``logits``; read by
            (and only allowed for) dr, sndr, switch_dr, dros, sg_dr, dr_jl and mrdr.
        base: "bce" (pointwise), "bt" (pairwise Bradley-Terry) or "mse" (pointwise
            ``(sigmoid(z) - y)^2`` for ratings y in [0, 1]; no noise correction: rho10 and rho01
            must be 0).
        estimator: "naive" (mean over observed rows), "ips", "snips", "dr", "sndr",
            "switch_dr", "dros", "sg_ips", "sg_dr", or the imputation objectives "dr_jl" and
            "mrdr" (see the module doc for each formula).
        rho10: label flip rate P(noisy 1 | clean 0).  rho10 = rho01 = 0: no correction.
        rho01: label flip rate P(noisy 0 | clean 1).  Needs 1 - rho10 - rho01 > 0.
        p_min: propensities below it are raised to it (weights at most 1 / p_min).  With
            ``p_min=0`` a tiny (e.g. denormal) propensity can make a weight overflow the
            dtype: that is an error, see below.
        reduction: "mean" (the estimator's value: divided by the observed count for naive, by
            the sum of weights for snips, by N for every other estimator), "sum" (sum of the
            row terms, not normalised) or "none" (the row terms: ``v_i l~_i`` for the ips
            family, ``e_i + v_i (l~_i - e_i)`` for the dr family, where ``v_i`` is the
            estimator's weight, for sndr ``N w_i / sum w``; ``m_i (l~_i - e_i)^2`` for dr_jl
            and mrdr).
        nonnegative: True clamps the reduced loss at 0 (gradient 0 when clamped; per row for
            "none").  The noise-corrected loss can be negative, and minimising a negative risk
            with a flexible model diverges.  "classwise" (backward correction, "mean" / "sum"):
            the risk R = R_1 + R_0 split into its terms in l(z, 1) and l(z, 0); the loss is
            max(0, R_1) + max(0, R_0) and the gradient follows nnPU's rule per class (Kiryo et
            al. 2017): the gradient of R_c where R_c >= -beta, else -gamma times it, a step that
            pushes R_c back up.  That rule is not the derivative of the reported loss (it is
            where every R_c >= 0).  With classes flipped, a second pass rewrites the gradients.
        tau: switch_dr's threshold (required there, >= 0, may be inf = dr): rows whose weight
            exceeds it keep only the imputed loss.  OBP's name.
        lambda_: dros' shrinkage (required there, >= 0, may be inf = dr; 0 = the imputation
            alone) or sg_ips / sg_dr's sub-Gaussian parameter (required there, in [0, 1];
            0 = ips / dr).  OBP's name (a trailing underscore: ``lambda`` is a keyword).
        correction: "backward" (Natarajan et al.: the surrogate l~ above) or "forward"
            (Patrini et al. 2017: BCE of the noisy label against the model's probability of a
            noisy 1, ``q = (1 - rho01) sigmoid(z) + rho10 (1 - sigmoid(z))``; non-negative rows,
            no 1/d factor; the imputed loss e is then the same loss against the label
            sigmoid(h)).  Combinable with every estimator.
        beta, gamma: nnPU's parameters of nonnegative="classwise" (defaults 0 and 1; an error
            with any other nonnegative).
        return_grad: also return the gradients of the loss (of the sum of the rows for "none").
        return_diagnostics: also return a dict of floats: "ess" (effective sample size of the
            estimator's weights v, (sum v)^2 / sum v^2), "clipped_share" (share of observed
            rows whose propensity was raised to p_min; NaN for naive), "risk1" and "risk0"
            (R_1 and R_0 of the backward-corrected bce / bt risk, as "mean" or "sum" reduces
            them; NaN for forward, mse and dr_jl / mrdr).  For torch they come from a second,
            forward-only call (not differentiable; reading them synchronises on CUDA).

    Returns:
        The loss (0-d array, or ``[N]`` for "none") in the library, device and dtype of
        ``logits``; with ``return_grad`` the tuple ``(loss, grad_logits, grad_imputed)``, where
        ``grad_imputed`` is None unless the estimator reads ``imputed_logits``; with
        ``return_diagnostics`` the pair ``(that result, diagnostics)``.

    Defined edge cases: empty input gives loss 0.  A batch without observed rows gives 0 and
    zero gradients for naive, ips and snips (nothing to learn from); dr then gives the mean
    imputed loss.  Invalid contents (NaN / inf logits, labels outside [0, 1], observed not
    0/1, propensity outside (0, 1]) raise ValueError naming the argument on the CPU; on CUDA,
    where raising would need a device synchronisation, they make the loss NaN.  So do valid
    contents that overflow the dtype: a weight ``o / max(p, p_min)``, a row loss or (with
    gradients) a row derivative beyond the dtype, a float64 sum that overflows, or a reduced
    loss beyond the dtype (ValueError "... overflows the logits' dtype ..." on the CPU).
    """
    options = PropensityOptions(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                correction, beta, gamma)
    boolean(return_diagnostics, "return_diagnostics")
    diagnostics: Optional[dict] = {} if return_diagnostics else None
    if _arrays.is_torch_tensor(logits):
        from ._torch_ops import propensity_diagnostics_torch, propensity_loss_torch

        result = propensity_loss_torch(logits, labels, observed, propensity, imputed_logits, options, return_grad)
        if return_diagnostics:
            diagnostics = propensity_diagnostics_torch(logits, labels, observed, propensity, imputed_logits, options)
        value = result if return_grad else result[0]
        return (value, diagnostics) if return_diagnostics else value
    loss, scale, df, dh = compute_propensity_loss(
        logits, labels, observed, propensity, imputed_logits, options, return_grad, diagnostics
    )
    result = loss
    if return_grad:
        assert df is not None and scale is not None  # want_grad was True
        if reduction != "none":
            df = df * scale
            dh = dh * scale if dh is not None else None
        result = (loss, df, dh)
    return (result, diagnostics) if return_diagnostics else result
