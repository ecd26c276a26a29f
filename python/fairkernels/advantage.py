"""Group-relative advantages (GRPO, RLOO, Dr. GRPO) with the unlikeliness rank reweighting,
pass@k advantages, several rewards per sample and framework presets.

The public function is :func:`group_advantages`.  numpy arrays and CPU torch tensors run on
the C++ kernel (cpp/advantage.cc); CUDA torch tensors and CuPy arrays run on the CUDA kernel
(cuda/advantage.cu) on the caller's current stream.  torch tensors go through the custom op
``torch.ops.fairkernels.group_advantages`` so that ``torch.compile(fullgraph=True)`` traces it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, Mapping, Optional, Tuple, Union

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
    pass_k: Optional[int] = None
    signal_tol: float = 0.0
    nan_rewards: str = "missing"
    multi_reward: str = "sum_then_normalize"
    # The kernel's likelihood enum (a call picks it or another, depending on its inputs).
    kernel_likelihood: Any = field(init=False, repr=False, compare=False)
    # The kernel's AdvantageOptions with these choices filled in (cpp/advantage.h); each call
    # copies it and adds its geometry (rows, groups, strides), so the choices are set once.
    kernel_template: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "kernel_likelihood", enum_value(_core.Likelihood, choice(
            self.likelihood, "likelihood", ("mean", "sum")), "likelihood"))
        choice(self.ties, "ties", ("average", "first"))
        choice(self.baseline, "baseline", ("mean", "loo"))
        scale = enum_value(_core.Scale, self.scale, "scale")
        choice(self.singleton, "singleton", ("zero", "raw"))
        boolean(self.unbiased, "unbiased")
        set_field(self, "beta_rank", real(self.beta_rank, "beta_rank"))
        set_field(self, "eps", real(self.eps, "eps", 0.0))
        if self.pass_k is not None:
            set_field(self, "pass_k", integer(self.pass_k, "pass_k", 1))
            if self.baseline != "mean":
                raise ValueError("pass_k sets its own baseline (the mean best-of-k reward): use baseline='mean'")
        set_field(self, "signal_tol", real(self.signal_tol, "signal_tol", 0.0))
        choice(self.nan_rewards, "nan_rewards", ("missing", "propagate"))
        multi_reward = enum_value(_core.MultiReward, self.multi_reward, "multi_reward")
        if self.multi_reward == "normalize_then_sum":
            self._check_normalize_then_sum()
        set_field(self, "kernel_template", self._kernel_template(scale, multi_reward))

    def __reduce__(self) -> tuple:
        # Pickle and copy by the choices: the kernel fields (core objects) are rebuilt from them.
        return type(self), tuple(getattr(self, f.name) for f in fields(self) if f.init)

    def _kernel_template(self, scale: Any, multi_reward: Any) -> Any:
        o = _core.AdvantageOptions()
        o.beta_rank = self.beta_rank
        o.ties_average = self.ties == "average"
        o.baseline_loo = self.baseline == "loo"
        o.scale = scale
        o.unbiased = self.unbiased
        o.eps = self.eps
        o.singleton_raw = self.singleton == "raw"
        o.pass_k = self.pass_k or 0
        o.signal_tol = self.signal_tol
        o.nan_missing = self.nan_rewards == "missing"
        o.multi_reward = multi_reward
        return o

    def _check_normalize_then_sum(self) -> None:
        # TRL's mode fixes the whole pipeline: z-scores per group and reward, then the weighted
        # sum normalised over the batch; none of the group options has a meaning there.
        fixed = {"beta_rank": (self.beta_rank, 0.0), "pass_k": (self.pass_k, None),
                 "baseline": (self.baseline, "mean"), "scale": (self.scale, "group"),
                 "nan_rewards": (self.nan_rewards, "missing")}
        for name, (value, default) in fixed.items():
            if value != default:
                raise ValueError(f"multi_reward='normalize_then_sum' normalises each reward within its group and "
                                 f"their weighted sum over the batch (TRL); it takes no {name} (got {value!r})")


#: The options a preset sets, at their values without a preset.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    dict(eps=1e-6, unbiased=True, singleton="zero", nan_rewards="missing", signal_tol=0.0))

#: Each framework's conventions, read from its code (tests/test_advantage_presets.py checks them
#: against the frameworks' own functions or faithful copies of them).
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # verl 0.9.1, verl/trainer/ppo/core_algos.py, compute_grpo_outcome_advantage (and
    # compute_rloo_outcome_advantage): torch.std, epsilon 1e-6, a group of one gets mean 0 and
    # std 1 (RLOO: its raw score), NaN scores are not special; zero variance is std == 0.
    "verl": MappingProxyType(dict(eps=1e-6, unbiased=True, singleton="raw", nan_rewards="propagate",
                                  signal_tol=0.0)),
    # TRL 1.16.0, trl/trainer/grpo_trainer.py, _generate_and_score_completions: nanmean and
    # nanstd (Bessel), (r - mean) / (std + 1e-4), NaN advantages (NaN rewards, groups of one)
    # become 0; is_std_zero = isclose(std, 0), i.e. std <= 1e-8.
    "trl": MappingProxyType(dict(eps=1e-4, unbiased=True, singleton="zero", nan_rewards="missing",
                                 signal_tol=1e-8)),
    # OpenRLHF, openrlhf/trainer/ppo_utils/experience_maker.py, advantage_estimator "group_norm":
    # rewards.reshape(-1, n_samples_per_prompt), (r - mean) / (std + 1e-9) with torch.std; NaN
    # is not special.  (A group of one: OpenRLHF divides 0 by torch.std of one value, NaN; the
    # preset gives 0 there.)
    "openrlhf": MappingProxyType(dict(eps=1e-9, unbiased=True, singleton="zero", nan_rewards="propagate",
                                      signal_tol=0.0)),
})


def preset_options(preset: Optional[str], **given: Any) -> dict:
    """The preset-controlled options: each given (not None) value, else the preset's, else the
    default (DEFAULTS)."""
    if preset is None:
        base = DEFAULTS
    else:
        base = PRESETS[choice(preset, "preset", tuple(PRESETS))]
    return {name: given[name] if given.get(name) is not None else base[name] for name in DEFAULTS}


def option_values(preset: Optional[str], likelihood: Any, beta_rank: Any, ties: Any, baseline: Any, scale: Any,
                  unbiased: Any, eps: Any, singleton: Any, pass_k: Any, signal_tol: Any, nan_rewards: Any,
                  multi_reward: Any) -> tuple:
    """The AdvantageOptions fields of a call's choices, the preset resolved (not validated)."""
    conventions = preset_options(preset, eps=eps, unbiased=unbiased, singleton=singleton, nan_rewards=nan_rewards,
                                 signal_tol=signal_tol)
    return (likelihood, beta_rank, ties, baseline, scale, conventions["unbiased"], conventions["eps"],
            conventions["singleton"], pass_k, conventions["signal_tol"], conventions["nan_rewards"], multi_reward)


@functools.lru_cache(maxsize=256, typed=True)  # typed: 1 and True are different options
def _cached_options(*choices: Any) -> AdvantageOptions:
    return AdvantageOptions(*option_values(*choices))


def validated_options(*choices: Any) -> AdvantageOptions:
    """AdvantageOptions from a call's choices (preset first, then the arguments of
    option_values); a training loop passes the same ones every step, so the validated result is
    cached (unhashable values are validated, and rejected, directly)."""
    try:
        return _cached_options(*choices)
    except TypeError as error:
        if "unhashable" not in str(error):
            raise
        return _cached_options.__wrapped__(*choices)


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
    unbiased: Optional[bool] = None,
    eps: Optional[float] = None,
    singleton: Optional[Literal["zero", "raw"]] = None,
    pass_k: Optional[int] = None,
    signal_tol: Optional[float] = None,
    nan_rewards: Optional[Literal["missing", "propagate"]] = None,
    reward_weights: Optional[Array] = None,
    multi_reward: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize",
    preset: Optional[Literal["verl", "trl", "openrlhf"]] = None,
    out: Optional[Array] = None,
    return_signal: bool = False,
) -> Union[Array, Tuple[Array, Array]]:
    """Group-relative advantages of a batch of sampled responses.

    Args:
        rewards: ``[N]`` float rewards, or ``[N, R]`` (R rewards per sample, combined as
            ``multi_reward`` says).  NaN means "no reward": the row is left out of its group's
            statistics and ranks and gets advantage 0 (see ``nan_rewards``).
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
        unbiased: std with N-1 (as torch.std, default) or N.
        eps: added to the std before dividing (default 1e-6).  A std of 0 gives advantage 0,
            also with ``eps=0`` (no 0/0); constant groups give exactly 0 for every option.
        singleton: groups with one rewarded row get 0 ("zero", default) or, as verl, baseline
            0 and a group std of 1 ("raw").
        pass_k: optimise the expected best reward of k samples instead of the mean (Pass@k
            training): each row's advantage is the mean, over the k-subsets of its group that
            hold it, of (subset maximum - mean subset maximum) / (std of the subset maximum +
            eps), computed exactly (float64 ratio recurrences; any real rewards, any k, groups
            of any size).  A group with m rewarded rows uses ``min(k, m)``: with k >= m every
            subset is the whole group and the advantages are 0.  The rank-reweighted rewards
            feed it; its std is the population std of the subset maximum (``unbiased`` does
            not apply; ``scale="batch"`` pools the groups' subset-maximum distributions), its
            baseline is the mean subset maximum (``baseline`` must be "mean").  ``pass_k=1``
            is GRPO with ``unbiased=False``.  None (default): plain group advantages.
        signal_tol: a group whose reward std (before rank reweighting, ddof from
            ``unbiased``) is <= signal_tol has no signal (DAPO's zero-variance filter with a
            tolerance): its ``return_signal`` flags are False.  The advantages are not
            changed; drop the rows whose flag is False to filter.  0 (default): a group has
            signal when its rewards are not all equal.
        nan_rewards: "missing" (default, as TRL): a NaN reward leaves its row out; "propagate"
            (as verl and OpenRLHF, which do not treat NaN specially): a NaN reward makes every
            advantage of its group NaN (those groups stay out of a batch std).
        reward_weights: ``[R]`` weights of the rewards of an ``[N, R]`` rewards array (default
            all 1), in the rewards' library and device.
        multi_reward: how ``[N, R]`` rewards become advantages, as TRL 1.16.0's
            ``multi_objective_aggregation``: "sum_then_normalize" (default) takes the weighted
            nansum per row (NaN when all R rewards are NaN) and then the group advantage
            above; "normalize_then_sum" z-scores each reward within its group ((r - mean) /
            (std + eps), NaN left out, a reward with fewer than two values in the group adds
            0), takes the weighted nansum and normalises it over the whole batch
            ((s - mean) / (std + eps)); it takes no beta_rank, pass_k, baseline or scale.  A
            ``[N]`` rewards array is one reward of weight 1.
        preset: "verl", "trl" or "openrlhf": that framework's eps, std, singleton, NaN and
            zero-variance conventions (``fairkernels.advantage.PRESETS``; verl: eps 1e-6,
            singleton "raw", NaN propagates; TRL: eps 1e-4, NaN missing, signal_tol 1e-8;
            OpenRLHF: eps 1e-9, NaN propagates), so that its numbers come out (OpenRLHF gives
            NaN for groups of one, the preset 0).  The estimator itself (``baseline``,
            ``scale``, ...) is still yours to choose; arguments given explicitly (not None)
            override the preset.  None: the defaults above.
        out: optional preallocated result (``[N]``, or ``[N, T]`` with a mask) of the rewards'
            dtype, library and device, returned filled.  Lets training loops reuse the
            token-level buffer (written in place when its rows have a contiguous last dimension).
        return_signal: also return a bool ``[N]``: True where the row's group has at least two
            rewarded rows whose rewards are not all equal, or whose std exceeds
            ``signal_tol`` (the groups GRPO learns from).

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
    choices = (preset, likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton, pass_k, signal_tol,
               nan_rewards, multi_reward)
    if _arrays.is_torch_tensor(rewards):
        from . import _torch_ops

        if _torch_ops.compiling():  # traced: the custom op validates the options itself
            result, signal = _torch_ops.group_advantages(
                rewards, group_size, group_ids, seq_logp, token_logp, mask, reward_weights,
                option_values(*choices), out)
            return (result, signal) if return_signal else result
    # Eager calls (numpy, CuPy, and torch, which skips the op dispatcher: tens of microseconds
    # per call; both paths run the same kernel on the same arguments).
    result, signal = compute_group_advantages(
        rewards, group_size, group_ids, seq_logp, token_logp, mask, validated_options(*choices), out, return_signal,
        reward_weights
    )
    return (result, signal) if return_signal else result


@dataclass(frozen=True)
class _Checked:
    """The array arguments of one call, as the kernel takes them."""

    rewards: ArrayView
    reward_weights: Optional[ArrayView]
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
        return (self.rewards, self.reward_weights, self.group_ids, self.seq_logp, self.token_logp, self.mask)

    @property
    def n_rewards(self) -> int:
        """R for several rewards per row (the kernel's n_rewards), 0 for plain [N] rewards."""
        return self.reward_weights.shape[0] if self.reward_weights is not None else 0


def _float_dtypes(r: ArrayView) -> tuple[str, ...]:
    return _arrays.FLOAT_DTYPES if r.on_cuda else _arrays.CPU_FLOAT_DTYPES


def _check_rewards(rewards, reward_weights, options: AdvantageOptions) -> tuple[ArrayView, Optional[ArrayView]]:
    """rewards [N] or [N, R] and their weights [R] (ones when not given; R = 1 for [N] rewards
    under normalize_then_sum, which is TRL's mode with one reward function)."""
    r = _arrays.view(rewards, "rewards")
    if len(r.shape) not in (1, 2):
        got = "a 0-d array" if not r.shape else f"shape {tuple(r.shape)}"
        raise ValueError(f"rewards must be 1-D [N] or 2-D [N, R] (several rewards per sample), got {got}")
    if len(r.shape) == 1:
        r = _arrays.accept(r, shape=(None,), dtypes=_float_dtypes(r))
        if reward_weights is not None:
            raise ValueError("reward_weights needs rewards of shape [N, R] (several rewards per sample)")
        if options.multi_reward != "normalize_then_sum":
            return r, None
        n_rewards = 1
    else:
        r = _arrays.accept(r, shape=(None, None), dtypes=_float_dtypes(r), context=" ([N] or [N, R])")
        n_rewards = r.shape[1]
        if n_rewards == 0:
            raise ValueError("rewards of shape [N, R] needs R >= 1 reward columns")
    if reward_weights is None:
        return r, _arrays.zeros(r, (n_rewards,), r.dtype, "reward_weights", value=1)
    weights = _arrays.take(reward_weights, "reward_weights", like=r, shape=(n_rewards,), dtypes=(r.dtype,),
                           convert={"float": r.dtype}, context=f" (one per reward column: R = {n_rewards})")
    return r, weights


def check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions,
                 reward_weights=None) -> _Checked:
    """Every array argument through the input layer (_arrays.take): as is, copied once, or a
    clear error.  Used by every real call (numpy, CuPy, torch eager and the torch op); the op's
    fake implementation checks the shapes it needs (_torch_ops._advantage_output_shape)."""
    r, weights = _check_rewards(rewards, reward_weights, options)
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
    return _Checked(r, weights, ids, group_size, seq, tok, msk, n_tokens)


def _row_stride(v: Optional[ArrayView]) -> int:
    return v.strides[0] if v is not None and len(v.shape) == 2 and v.strides is not None else 0


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
    a.reward_weights = _arrays.address_of(checked.reward_weights)
    a.group_ids = _arrays.address_of(checked.group_ids)
    a.seq_logp = _arrays.address_of(checked.seq_logp)
    a.token_logp = _arrays.address_of(checked.token_logp)
    a.mask = _arrays.address_of(checked.mask)
    a.out = out.address
    a.row_has_signal = _arrays.address_of(signal)
    a.out_dtype = _arrays.DTYPES[out.dtype]
    if checked.token_logp is not None:
        a.logp_dtype = _arrays.DTYPES[checked.token_logp.dtype]
    if checked.mask is not None:
        a.mask_dtype = _arrays.DTYPES[checked.mask.dtype]
    o = _core.AdvantageOptions(options.kernel_template)
    o.n_rows = checked.rewards.shape[0]
    o.group_size = checked.group_size
    o.likelihood = _likelihood(checked, options)
    o.n_rewards = checked.n_rewards
    o.n_tokens = checked.n_tokens
    o.logp_row_stride = _row_stride(checked.token_logp)
    o.mask_row_stride = _row_stride(checked.mask)
    o.out_row_stride = _row_stride(out)
    o.streaming_stores = streaming
    return a, o


def compute_group_advantages(
    rewards, group_size, group_ids, seq_logp, token_logp, mask, options: AdvantageOptions, out=None,
    want_signal: bool = True, reward_weights=None,
) -> tuple[Array, Optional[Array]]:
    """Validates, allocates and runs the kernel; the library-agnostic core of the public API."""
    checked = check_arrays(rewards, group_size, group_ids, seq_logp, token_logp, mask, options, reward_weights)
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
