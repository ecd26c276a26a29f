"""Group-relative advantages (GRPO, RLOO, Dr. GRPO) with the unlikeliness rank reweighting.

The public function is :func:`group_advantages`.  numpy arrays and CPU torch tensors run on
the C++ kernel (cpp/advantage.cc); CUDA torch tensors and CuPy arrays run on the CUDA kernel
(cuda/advantage.cu) on the caller's current stream.  torch tensors go through the custom op
``torch.ops.fairkernels.group_advantages`` so that ``torch.compile(fullgraph=True)`` traces it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Tuple, Union

from . import _arrays, _core
from ._arrays import ArrayView
from ._backend import launch
from ._options import boolean, choice, enum_value, integer, real

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


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
    # The kernel's values of the choices (core enums and flags), computed once.
    kernel_scale: Any = field(init=False, repr=False, compare=False)
    kernel_likelihood: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "kernel_likelihood", enum_value(_core.Likelihood, choice(
            self.likelihood, "likelihood", ("mean", "sum")), "likelihood"))
        choice(self.ties, "ties", ("average", "first"))
        choice(self.baseline, "baseline", ("mean", "loo"))
        set_field(self, "kernel_scale", enum_value(_core.Scale, self.scale, "scale"))
        choice(self.singleton, "singleton", ("zero", "raw"))
        boolean(self.unbiased, "unbiased")
        set_field(self, "beta_rank", real(self.beta_rank, "beta_rank"))
        set_field(self, "eps", real(self.eps, "eps", 0.0))


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
        mask: ``[N, T]`` response mask: bool / uint8 / integer (nonzero = response token) or a
            float mask (multiplies; other float dtypes are converted once to the rewards').
            When given the result is token-level: ``out[i, t] = A_i * mask[i, t]``.
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
            dtype, library and device, returned filled.  Lets training loops reuse the
            token-level buffer (written in place when its rows have a contiguous last dimension).
        return_signal: also return a bool ``[N]``: True where the row's group has at least two
            rewarded rows whose rewards are not all equal (the groups GRPO learns from).

    Returns:
        The advantages in the rewards' library, device and dtype (``[N]`` or ``[N, T]``), and
        with ``return_signal`` the per-row signal flags.

    Any memory layout is taken (fairkernels._arrays): ``[N]`` inputs that are not contiguous
    (columns, reversed or broadcast views, another byte order, unaligned data) are copied once;
    ``[N, T]`` inputs are read in place when their last dimension is contiguous (any row
    stride >= 0), else copied once.  Integer masks are converted to bool (nonzero selects),
    masks of another float dtype to the rewards' dtype.  An ``out=`` the kernel cannot write in
    place (a column, another byte order, memory shared with an input) receives the result
    through one extra copy; a read-only ``out=``, one whose elements overlap, or a tensor that
    requires grad is a ValueError.  Array arguments must be arrays (lists are a TypeError).
    A NaN likelihood among a group's rewarded rows (with ``beta_rank != 0``) makes that
    group's advantages NaN; so does a +-inf reward, or float64 group statistics that overflow
    (README, "Numerical edge cases"), and such a group stays out of the batch std.  On the CPU
    the result is bit-identical for the same input whatever the thread count.
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
    """The array arguments of one call, as the kernel takes them."""

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

    @property
    def inputs(self) -> tuple[Optional[ArrayView], ...]:
        return (self.rewards, self.group_ids, self.seq_logp, self.token_logp, self.mask)


def _float_dtypes(r: ArrayView) -> tuple[str, ...]:
    return _arrays.FLOAT_DTYPES if r.on_cuda else _arrays.CPU_FLOAT_DTYPES


def check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions) -> _Checked:
    """Every array argument through the input layer (_arrays.take): as is, copied once, or a
    clear error.  Used by every real call (numpy, CuPy, torch eager and the torch op); the op's
    fake implementation checks the shapes it needs (_torch_ops._advantage_output_shape)."""
    r = _arrays.view(rewards, "rewards")
    r = _arrays.accept(r, shape=(None,), dtypes=_float_dtypes(r))
    n = r.shape[0]
    rows = f" (one per reward: N = {n})"
    if (group_size is None) == (group_ids is None):
        raise ValueError("give exactly one of group_size and group_ids")
    ids = None
    if group_ids is not None:
        ids = _arrays.take(group_ids, "group_ids", like=r, shape=(n,), dtypes=("int64",), convert={"int": "int64"},
                           context=rows)
        group_size = 0
    else:
        group_size = integer(group_size, "group_size", 1)
        if n % group_size:
            raise ValueError(f"group_size={group_size} does not divide the number of rewards ({n})")
    if seq_logp is not None and token_logp is not None:
        raise ValueError("give at most one of seq_logp and token_logp")
    same_float = {"float": r.dtype}
    seq = None
    if seq_logp is not None:
        seq = _arrays.take(seq_logp, "seq_logp", like=r, shape=(n,), dtypes=(r.dtype,), convert=same_float,
                           context=rows)
    tok = msk = None
    n_tokens = 0
    if token_logp is not None:
        if mask is None:
            raise ValueError("token_logp needs mask: the log-probs are reduced over the response tokens")
        tok = _arrays.take(token_logp, "token_logp", like=r, shape=(n, None), dtypes=_float_dtypes(r),
                           convert=same_float, layout="rows", context=f" ([N, T] with N = {n} rewards)")
        n_tokens = tok.shape[1]
    if mask is not None:
        tokens = tok.shape[1] if tok is not None else None
        msk = _arrays.take(mask, "mask", like=r, shape=(n, tokens), dtypes=("bool", "uint8", r.dtype),
                           convert={"float": r.dtype, "int": "bool"}, layout="rows",
                           context=f" ([N, T] with N = {n} rewards" + (", T of token_logp)" if tok else ")"))
        n_tokens = msk.shape[1]
    if options.beta_rank != 0.0 and seq is None and tok is None:
        raise ValueError("beta_rank != 0 needs seq_logp or token_logp to rank the samples")
    return _Checked(r, ids, group_size, seq, tok, msk, n_tokens)


def _row_stride(v: Optional[ArrayView]) -> int:
    return v.strides[0] if v is not None and len(v.shape) == 2 and v.strides is not None else 0


def _address(v: Optional[ArrayView]) -> int:
    return v.address if v is not None else 0


_NO_LIKELIHOOD, _SEQUENCE_LIKELIHOOD = _core.Likelihood.none, _core.Likelihood.sequence


def _likelihood(checked: _Checked, options: AdvantageOptions) -> Any:
    if options.beta_rank == 0.0:
        return _NO_LIKELIHOOD
    if checked.seq_logp is not None:
        return _SEQUENCE_LIKELIHOOD
    return options.kernel_likelihood


def _kernel_arguments(checked: _Checked, options: AdvantageOptions, out: ArrayView, signal: Optional[ArrayView],
                      streaming: bool) -> tuple[Any, Any]:
    """The kernel's typed argument structs (cpp/advantage.h), filled field by field."""
    a = _core.AdvantageArrays()
    a.rewards = checked.rewards.address
    a.group_ids = _address(checked.group_ids)
    a.seq_logp = _address(checked.seq_logp)
    a.token_logp = _address(checked.token_logp)
    a.mask = _address(checked.mask)
    a.out = out.address
    a.row_has_signal = _address(signal)
    a.out_dtype = _arrays.DTYPES[out.dtype]
    if checked.token_logp is not None:
        a.logp_dtype = _arrays.DTYPES[checked.token_logp.dtype]
    if checked.mask is not None:
        a.mask_dtype = _arrays.DTYPES[checked.mask.dtype]
    o = _core.AdvantageOptions()
    o.n_rows = checked.rewards.shape[0]
    o.group_size = checked.group_size
    o.likelihood = _likelihood(checked, options)
    o.beta_rank = options.beta_rank
    o.ties_average = options.ties == "average"
    o.baseline_loo = options.baseline == "loo"
    o.scale = options.kernel_scale
    o.unbiased = options.unbiased
    o.eps = options.eps
    o.singleton_raw = options.singleton == "raw"
    o.n_tokens = checked.n_tokens
    o.logp_row_stride = _row_stride(checked.token_logp)
    o.mask_row_stride = _row_stride(checked.mask)
    o.out_row_stride = _row_stride(out)
    o.streaming_stores = streaming
    return a, o


def compute_group_advantages(
    rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions, out=None,
    want_signal: bool = True,
) -> tuple[Array, Optional[Array]]:
    """Validates, allocates and runs the kernel; the library-agnostic core of the public API."""
    checked = check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options)
    r = checked.rewards
    layout = "rows" if checked.mask is not None else "contiguous"
    result = _arrays.take_out(out, "out", like=r, shape=checked.output_shape, dtype=r.dtype, layout=layout,
                              inputs=checked.inputs)
    signal = _arrays.fresh(r, (r.shape[0],), "bool", "signal") if want_signal else None
    # Streaming stores only into the caller's own (already mapped) buffer; see
    # AdvantageOptions::streaming_stores.
    streaming = out is not None and result.kernel is result.target
    launch("group_advantages", r, *_kernel_arguments(checked, options, result.kernel, signal, streaming))
    return result.finish(), (signal.array if signal is not None else None)
