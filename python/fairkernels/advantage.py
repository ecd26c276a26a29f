"""Group-relative advantages (GRPO, RLOO, Dr. GRPO) with the unlikeliness rank reweighting.

The public function is :func:`group_advantages`.  numpy arrays and CPU torch tensors run on
the C++ kernel (cpp/advantage.cc); CUDA torch tensors and CuPy arrays run on the CUDA kernel
(cuda/advantage.cu) on the caller's current stream.  torch tensors go through the custom op
``torch.ops.fairkernels.group_advantages`` so that ``torch.compile(fullgraph=True)`` traces it.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Optional, Tuple, Union

from . import _arrays
from ._arrays import ArrayView
from ._backend import cuda_call_arguments, kernels_for

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

_LIKELIHOOD_CODES = {"none": 0, "sequence": 1, "mean": 2, "sum": 3}
_SCALE_CODES = {"group": 0, "batch": 1, "none": 2}


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _finite_float(value: Any, name: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" and >= {minimum}"
        raise ValueError(f"{name} must be finite{bound}, got {value}")
    return value


@dataclass(frozen=True)
class AdvantageOptions:
    """The scalar options of :func:`group_advantages`, validated once."""

    likelihood: str = "mean"
    beta_rank: float = 0.0
    ties: str = "average"
    baseline: str = "mean"
    scale: str = "group"
    unbiased: bool = True
    eps: float = 1e-6
    singleton: str = "zero"

    def __post_init__(self) -> None:
        _choice(self.likelihood, "likelihood", ("mean", "sum"))
        _choice(self.ties, "ties", ("average", "first"))
        _choice(self.baseline, "baseline", ("mean", "loo"))
        _choice(self.scale, "scale", ("group", "batch", "none"))
        _choice(self.singleton, "singleton", ("zero", "raw"))
        if not isinstance(self.unbiased, bool):
            raise TypeError(f"unbiased must be a bool, got {type(self.unbiased).__name__}")
        object.__setattr__(self, "beta_rank", _finite_float(self.beta_rank, "beta_rank"))
        object.__setattr__(self, "eps", _finite_float(self.eps, "eps", minimum=0.0))


@functools.lru_cache(maxsize=256, typed=True)  # typed: 1 and True are different options
def _cached_options(*raw: Any) -> AdvantageOptions:
    return AdvantageOptions(*raw)


def validated_options(*raw: Any) -> AdvantageOptions:
    """AdvantageOptions from raw values; a training loop passes the same ones every step, so
    the validated result is cached (unhashable values are validated, and rejected, directly)."""
    try:
        return _cached_options(*raw)
    except TypeError as error:
        if "unhashable" not in str(error):
            raise
        return AdvantageOptions(*raw)


def group_advantages(
    rewards: Array,
    *,
    group_size: Optional[int] = None,
    group_ids: Optional[Array] = None,
    seq_logp: Optional[Array] = None,
    token_logp: Optional[Array] = None,
    mask: Optional[Array] = None,
    likelihood: Literal["mean", "sum"] = "mean",
    beta_rank: float = 0.0,
    ties: Literal["average", "first"] = "average",
    baseline: Literal["mean", "loo"] = "mean",
    scale: Literal["group", "batch", "none"] = "group",
    unbiased: bool = True,
    eps: float = 1e-6,
    singleton: Literal["zero", "raw"] = "zero",
    out: Optional[Array] = None,
    return_signal: bool = False,
) -> Union[Array, Tuple[Array, Array]]:
    """Group-relative advantages of a batch of sampled responses.

    Args:
        rewards: ``[N]`` float rewards.  NaN means "no reward": the row is left out of its
            group's statistics and ranks and gets advantage 0.
        group_size: rows ``i*G .. i*G+G-1`` form group ``i`` (N must be a multiple of G).
        group_ids: ``[N]`` integer ids (e.g. prompt indices); any values, in any order.
            Exactly one of ``group_size`` and ``group_ids``.
        seq_logp: ``[N]`` per-sequence likelihoods for the rank reweighting.
        token_logp: ``[N, T]`` per-token log-probs, reduced under ``mask`` (mean or sum, see
            ``likelihood``) into the per-sequence likelihood.  Positions where the mask is 0
            are never read into the sum (padding may hold -inf or NaN).  An empty mask row has
            likelihood 0.  Give at most one of ``seq_logp`` / ``token_logp``.
        mask: ``[N, T]`` response mask (bool, uint8, or float of the rewards' dtype; other
            float dtypes are converted once).  When given the result is token-level:
            ``out[i, t] = A_i * mask[i, t]``.
        likelihood: "mean" (the authors' choice) or "sum" of the token log-probs.
        beta_rank: unlikeliness strength: ``r' = r * (1 - beta_rank * rank / m)``, rank 0 for
            the least likely of the m rewarded rows of the group.  0 turns it off (plain GRPO).
        ties: "average" (equal likelihoods share the mean rank) or "first" (lower row first).
        baseline: "mean" (GRPO) or "loo" (RLOO: mean of the other rewarded rows).
        scale: divide by the group's std ("group"), the batch's std ("batch") or not ("none").
        unbiased: std with N-1 (as torch.std) or N.
        eps: added to the std before dividing.  A std of 0 gives advantage 0, also with
            ``eps=0`` (no 0/0); constant groups give exactly 0 for every option.
        singleton: groups with one rewarded row get 0 ("zero") or, as verl, baseline 0 and a
            group std of 1 ("raw").
        out: optional preallocated result (``[N]``, or ``[N, T]`` with a mask) of the rewards'
            dtype, library and device; rows may be strided, the last dimension must be
            contiguous.  Lets training loops reuse the token-level buffer.
        return_signal: also return a bool ``[N]``: True where the row's group has at least two
            rewarded rows whose rewards are not all equal (the groups GRPO learns from).

    Returns:
        The advantages in the rewards' library, device and dtype (``[N]`` or ``[N, T]``), and
        with ``return_signal`` the per-row signal flags.

    Non-contiguous ``[N]`` inputs are copied (cheap); ``[N, T]`` inputs may have any row stride
    but need a contiguous last dimension, otherwise they are copied once.  A NaN likelihood
    among a group's rewarded rows (with ``beta_rank != 0``) makes that group's advantages NaN;
    so does a +-inf reward, or float64 group statistics that overflow (README, "Numerical edge
    cases"), and such a group stays out of the batch std.  On the CPU the result is bit-identical for the same input whatever the thread count.
    float16/bfloat16 are accepted on CUDA only (accumulated in float32).
    """
    raw_options = (likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton)
    if _arrays.is_torch_tensor(rewards):
        from . import _torch_ops

        result, signal = _torch_ops.group_advantages(
            rewards, group_size, group_ids, seq_logp, token_logp, mask, raw_options, out, return_signal
        )
    else:
        options = validated_options(*raw_options)
        result, signal = compute_group_advantages(
            rewards, group_size, group_ids, seq_logp, token_logp, mask, options, out, return_signal
        )
    return (result, signal) if return_signal else result


@dataclass(frozen=True)
class _Checked:
    """Validated array views of one call, ready for the kernel."""

    rewards: ArrayView
    group_ids: Optional[ArrayView]
    group_size: int
    seq_logp: Optional[ArrayView]
    token_logp: Optional[ArrayView]
    mask: Optional[ArrayView]
    n_tokens: int

    @property
    def output_shape(self) -> tuple[int, ...]:
        n = self.rewards.shape[0]
        return (n, self.n_tokens) if self.mask is not None else (n,)


def _check_group_size(group_size: Any, n: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if n % group_size:
        raise ValueError(f"group_size={group_size} does not divide the number of rewards ({n})")
    return int(group_size)


def _allowed_floats(r: ArrayView) -> tuple[str, ...]:
    return _arrays.FLOAT_DTYPES if r.on_cuda else _arrays.CPU_FLOAT_DTYPES


def check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions) -> _Checked:
    """Validates shapes, dtypes and devices; converts only where documented.  Used by every
    real call (numpy, CuPy, torch eager and the torch op); the op's fake implementation checks
    the shapes it needs (_torch_ops._advantage_output_shape)."""
    r = _arrays.view(rewards, "rewards")
    if len(r.shape) != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {r.shape}")
    if r.dtype not in _allowed_floats(r):
        raise TypeError(f"rewards must have dtype {' or '.join(_allowed_floats(r))} here, got {r.dtype}")
    n = r.shape[0]
    if (group_size is None) == (group_ids is None):
        raise ValueError("give exactly one of group_size and group_ids")
    ids = None
    if group_ids is not None:
        ids = _row_vector(group_ids, "group_ids", r)
        if not ids.dtype.startswith(("int", "uint")):
            raise TypeError(f"group_ids must have an integer dtype, got {ids.dtype}")
        ids = _arrays.astype(ids, "int64")
        group_size = 0
    else:
        group_size = _check_group_size(group_size, n)
    if seq_logp is not None and token_logp is not None:
        raise ValueError("give at most one of seq_logp and token_logp")
    seq = None
    if seq_logp is not None:
        seq = _row_vector(seq_logp, "seq_logp", r)
        _require_float(seq, r)
        seq = _arrays.astype(seq, r.dtype)
    tok = msk = None
    n_tokens = 0
    if token_logp is not None:
        if mask is None:
            raise ValueError("token_logp needs mask: the log-probs are reduced over the response tokens")
        tok = _row_matrix(token_logp, "token_logp", r)
        _require_float(tok, r)
        n_tokens = tok.shape[1]
    if mask is not None:
        msk = _row_matrix(mask, "mask", r)
        if tok is not None and msk.shape != tok.shape:
            raise ValueError(f"mask has shape {msk.shape} but token_logp has shape {tok.shape}")
        if msk.dtype not in ("bool", "uint8"):
            _require_float(msk, r)
            msk = _arrays.inner_contiguous(_arrays.astype(msk, r.dtype) if msk.dtype != r.dtype else msk)
        n_tokens = msk.shape[1]
    if options.beta_rank != 0.0 and seq is None and tok is None:
        raise ValueError("beta_rank != 0 needs seq_logp or token_logp to rank the samples")
    return _Checked(r, ids, group_size, seq, tok, msk, n_tokens)


def _row_vector(x: Any, name: str, r: ArrayView) -> ArrayView:
    v = _arrays.view(x, name)
    _arrays.same_place(r, v)
    if v.shape != r.shape:
        raise ValueError(f"{name} must have shape {r.shape} like rewards, got {v.shape}")
    return _arrays.contiguous(v)


def _row_matrix(x: Any, name: str, r: ArrayView) -> ArrayView:
    v = _arrays.view(x, name)
    _arrays.same_place(r, v)
    if len(v.shape) != 2 or v.shape[0] != r.shape[0]:
        raise ValueError(f"{name} must have shape [N, T] with N = {r.shape[0]} (rewards), got {v.shape}")
    return _arrays.inner_contiguous(v)


def _require_float(v: ArrayView, r: ArrayView) -> None:
    if v.dtype not in _allowed_floats(r):
        raise TypeError(f"{v.name} must have dtype {' or '.join(_allowed_floats(r))} here, got {v.dtype}")


def _prepare_out(out: Any, checked: _Checked) -> ArrayView:
    r = checked.rewards
    if out is None:
        return _arrays.empty(r, checked.output_shape, r.dtype, "out")
    o = _arrays.view(out, "out")
    _arrays.same_place(r, o)
    if o.shape != checked.output_shape or o.dtype != r.dtype:
        raise ValueError(f"out must have shape {checked.output_shape} and dtype {r.dtype}, got {o.shape} {o.dtype}")
    last_stride_ok = len(o.shape) == 1 and (o.strides[0] == 1 or o.shape[0] <= 1)
    last_stride_ok |= len(o.shape) == 2 and (o.strides[1] == 1 or o.shape[1] <= 1)
    if not last_stride_ok:
        raise ValueError("out must be contiguous in its last dimension (rows may be strided)")
    return o


def _row_stride(v: Optional[ArrayView]) -> int:
    return v.strides[0] if v is not None and len(v.shape) == 2 else 0


def _likelihood_code(checked: _Checked, options: AdvantageOptions) -> int:
    if options.beta_rank == 0.0:
        return _LIKELIHOOD_CODES["none"]
    if checked.seq_logp is not None:
        return _LIKELIHOOD_CODES["sequence"]
    return _LIKELIHOOD_CODES[options.likelihood]


def compute_group_advantages(
    rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions, out=None,
    want_signal: bool = True,
) -> tuple[Array, Optional[Array]]:
    """Validates, allocates and runs the kernel; the library-agnostic core of the public API."""
    checked = check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options)
    r = checked.rewards
    result = _prepare_out(out, checked)
    signal = _arrays.empty(r, (r.shape[0],), "bool", "signal") if want_signal else None
    kernels = kernels_for(r)

    def address(v: Optional[ArrayView]) -> int:
        return v.address if v is not None else 0

    args = {
        "rewards": r.address,
        "group_ids": address(checked.group_ids),
        "seq_logp": address(checked.seq_logp),
        "token_logp": address(checked.token_logp),
        "mask": address(checked.mask),
        "out": result.address,
        "row_has_signal": address(signal),
        "out_dtype": _arrays.DTYPE_CODES[r.dtype],
        "logp_dtype": _arrays.DTYPE_CODES[checked.token_logp.dtype] if checked.token_logp is not None else 0,
        "mask_dtype": _arrays.DTYPE_CODES[checked.mask.dtype] if checked.mask is not None else 0,
        "n_rows": r.shape[0],
        "group_size": checked.group_size,
        "likelihood": _likelihood_code(checked, options),
        "beta_rank": options.beta_rank,
        "ties_average": options.ties == "average",
        "baseline_loo": options.baseline == "loo",
        "scale": _SCALE_CODES[options.scale],
        "unbiased": options.unbiased,
        "eps": options.eps,
        "singleton_raw": options.singleton == "raw",
        "n_tokens": checked.n_tokens,
        "logp_row_stride": _row_stride(checked.token_logp),
        "mask_row_stride": _row_stride(checked.mask),
        "out_row_stride": _row_stride(result),
        "streaming_stores": out is not None,  # see AdvantageOptions::streaming_stores
        **cuda_call_arguments(r),
    }
    kernels.group_advantages(args)
    return result.array, (signal.array if signal is not None else None)
