"""torch.library custom ops over the compiled kernels.

Registered on first use (importing this module needs torch).  Each op has a fake (meta)
implementation that only computes output shapes, so torch.compile(fullgraph=True) traces
through the kernels without running them.
"""

from __future__ import annotations

from typing import Optional

import torch

from .advantage import AdvantageOptions, compute_group_advantages, validated_options


def _advantage_output_shape(rewards: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if mask is not None and (mask.dim() != 2 or mask.shape[0] != rewards.shape[0]):
        raise ValueError(f"mask must have shape [N, T] with N = {rewards.shape[0]}, got {tuple(mask.shape)}")
    return (rewards.shape[0], mask.shape[1]) if mask is not None else (rewards.shape[0],)


@torch.library.custom_op("fairkernels::group_advantages", mutates_args=())
def group_advantages_op(
    rewards: torch.Tensor,
    group_size: Optional[int],
    group_ids: Optional[torch.Tensor],
    seq_logp: Optional[torch.Tensor],
    token_logp: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    likelihood: str,
    beta_rank: float,
    ties: str,
    baseline: str,
    scale: str,
    unbiased: bool,
    eps: float,
    singleton: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    options = AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton)
    return compute_group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options)


@group_advantages_op.register_fake
def _(rewards, group_size, group_ids, seq_logp, token_logp, mask, likelihood, beta_rank, ties, baseline,
      scale, unbiased, eps, singleton):
    AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton)
    shape = _advantage_output_shape(rewards, mask)
    return rewards.new_empty(shape), rewards.new_empty((rewards.shape[0],), dtype=torch.bool)


@torch.library.custom_op("fairkernels::group_advantages_out", mutates_args=("out",))
def group_advantages_out_op(
    rewards: torch.Tensor,
    group_size: Optional[int],
    group_ids: Optional[torch.Tensor],
    seq_logp: Optional[torch.Tensor],
    token_logp: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    likelihood: str,
    beta_rank: float,
    ties: str,
    baseline: str,
    scale: str,
    unbiased: bool,
    eps: float,
    singleton: str,
    out: torch.Tensor,
) -> torch.Tensor:
    options = AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton)
    return compute_group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options, out)[1]


@group_advantages_out_op.register_fake
def _(rewards, group_size, group_ids, seq_logp, token_logp, mask, likelihood, beta_rank, ties, baseline,
      scale, unbiased, eps, singleton, out):
    AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton)
    if tuple(out.shape) != tuple(_advantage_output_shape(rewards, mask)):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {_advantage_output_shape(rewards, mask)}")
    return rewards.new_empty((rewards.shape[0],), dtype=torch.bool)


def _detached(x: Optional[torch.Tensor], name: str) -> Optional[torch.Tensor]:
    # Advantages are constants of the policy-gradient loss: ranks and statistics carry no
    # gradient, so log-probs that require grad are read without recording them.
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} is a {type(x).__module__.split('.')[0]} array but rewards is a torch tensor: "
                         "pass all arrays from one library and device")
    return x.detach()


def group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options_tuple, out,
                     want_signal=True):
    """Calls the custom op; options_tuple = (likelihood, beta_rank, ties, baseline, scale,
    unbiased, eps, singleton), validated by the op itself (also under torch.compile).  Eager
    calls skip the signal flags unless asked for (want_signal)."""
    if not torch.compiler.is_compiling():
        # Eager calls skip the op dispatcher (tens of microseconds per call): the op exists
        # for tracing, and both paths run the same kernel on the same arguments.  The kernel
        # reads raw memory, so nothing is recorded for autograd either way.
        options = validated_options(*options_tuple)
        return compute_group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options, out,
                                        want_signal)
    inputs = (
        _detached(rewards, "rewards"), group_size, _detached(group_ids, "group_ids"),
        _detached(seq_logp, "seq_logp"), _detached(token_logp, "token_logp"), _detached(mask, "mask"),
        *options_tuple,
    )
    if out is None:
        return torch.ops.fairkernels.group_advantages(*inputs)
    signal = torch.ops.fairkernels.group_advantages_out(*inputs, out)
    return out, signal
