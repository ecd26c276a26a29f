"""Every torch.library custom op of fairkernels, with its fake implementation and autograd.

Importing this module needs torch (it is imported on first use by a torch call).  Each op has a
fake (meta) implementation that only computes output shapes, so ``torch.compile(fullgraph=True)``
traces through the kernels without running them.  In eager mode the public functions skip the
op dispatcher (tens of microseconds per call) and run the same library-agnostic function the op
runs (``compute_group_advantages``, ``compute_propensity_loss``, ``update_state``,
``select_arms``), so both paths give the same numbers.

* ``fairkernels::group_advantages`` / ``group_advantages_out``: advantages (no gradient: they
  are constants of the policy-gradient loss).
* ``fairkernels::propensity_loss``: the loss only; ``fairkernels::propensity_loss_fused``: the
  loss plus the per-row derivatives of the same single pass, whose autograd formula
  (:func:`gradient_factor`) only rescales them, so forward + backward read every input once.
  The eager twin :class:`_EagerFused` uses the same formula.  Gradients flow to the logits and
  the imputation logits; labels, observed flags and propensities are data.  First order only.
* ``fairkernels::bandit_update`` (mutates the state) and ``fairkernels::bandit_select``: the
  two kernels of :class:`fairkernels.bandits.GridBounds` whose state lives in torch.
"""

from __future__ import annotations

from typing import Any, Optional, cast

import torch
from torch.autograd.function import once_differentiable

from . import _arrays
from .advantage import AdvantageOptions, compute_group_advantages
from .bandits.policies import STATE_FIELDS, bound_options, select_arms, state_struct, update_state
from .propensity import IMPUTED_ESTIMATORS, PropensityOptions, compute_propensity_loss, logits_shape_ok

# ------------------------------------------------------------------------------------------
# Group advantages


def _advantage_output_shape(rewards: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple:
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards must be 1-D [N] or 2-D [N, R], got shape {tuple(rewards.shape)}")
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
    pass_k: Optional[int],
    signal_tol: float,
    nan_rewards: str,
    multi_reward: str,
    reward_weights: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    options = AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton, pass_k,
                               signal_tol, nan_rewards, multi_reward)
    return cast(tuple[torch.Tensor, torch.Tensor],
                compute_group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options,
                                         reward_weights=reward_weights))


@group_advantages_op.register_fake
def _(rewards, group_size, group_ids, seq_logp, token_logp, mask, likelihood, beta_rank, ties, baseline,
      scale, unbiased, eps, singleton, pass_k, signal_tol, nan_rewards, multi_reward, reward_weights):
    AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton, pass_k, signal_tol,
                     nan_rewards, multi_reward)
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
    pass_k: Optional[int],
    signal_tol: float,
    nan_rewards: str,
    multi_reward: str,
    reward_weights: Optional[torch.Tensor],
    out: torch.Tensor,
) -> torch.Tensor:
    options = AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton, pass_k,
                               signal_tol, nan_rewards, multi_reward)
    signal = compute_group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, options, out,
                                      reward_weights=reward_weights)[1]
    return cast(torch.Tensor, signal)


@group_advantages_out_op.register_fake
def _(rewards, group_size, group_ids, seq_logp, token_logp, mask, likelihood, beta_rank, ties, baseline,
      scale, unbiased, eps, singleton, pass_k, signal_tol, nan_rewards, multi_reward, reward_weights, out):
    AdvantageOptions(likelihood, beta_rank, ties, baseline, scale, unbiased, eps, singleton, pass_k, signal_tol,
                     nan_rewards, multi_reward)
    if tuple(out.shape) != tuple(_advantage_output_shape(rewards, mask)):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {_advantage_output_shape(rewards, mask)}")
    return rewards.new_empty((rewards.shape[0],), dtype=torch.bool)


def _require_tensor(x: Any, name: str, reference: torch.Tensor, reference_name: str) -> None:
    """The input layer's error for an argument of another library than the torch reference."""
    if x is not None and not isinstance(x, torch.Tensor):
        _arrays.same_place(_arrays.view(reference, reference_name), _arrays.view(x, name))


def _detached(x: Optional[torch.Tensor], name: str, rewards: torch.Tensor) -> Optional[torch.Tensor]:
    # Advantages are constants of the policy-gradient loss: ranks and statistics carry no
    # gradient, so log-probs that require grad are read without recording them.
    _require_tensor(x, name, rewards, "rewards")
    return x.detach() if x is not None else None


def compiling() -> bool:
    """True while torch.compile traces (the public functions then call the custom ops)."""
    return torch.compiler.is_compiling()


def group_advantages(rewards, group_size, group_ids, seq_logp, token_logp, mask, reward_weights, options_tuple,
                     out):
    """Calls the custom op while torch.compile traces; options_tuple = (likelihood, beta_rank,
    ties, baseline, scale, unbiased, eps, singleton, pass_k, signal_tol, nan_rewards,
    multi_reward), validated by the op itself.  Eager calls do not come here: they run
    compute_group_advantages directly (fairkernels.advantage.group_advantages)."""
    inputs = (
        rewards.detach(), group_size, _detached(group_ids, "group_ids", rewards),
        _detached(seq_logp, "seq_logp", rewards), _detached(token_logp, "token_logp", rewards),
        _detached(mask, "mask", rewards), *options_tuple, _detached(reward_weights, "reward_weights", rewards),
    )
    if out is None:
        return torch.ops.fairkernels.group_advantages(*inputs)
    signal = torch.ops.fairkernels.group_advantages_out(*inputs, out)
    return out, signal


# ------------------------------------------------------------------------------------------
# Propensity-weighted losses


def _check_fake(logits: torch.Tensor, imputed: Optional[torch.Tensor], options: PropensityOptions) -> None:
    if not logits_shape_ok(tuple(logits.shape), options.base):
        raise ValueError(f"logits has shape {tuple(logits.shape)}, not valid for base={options.base!r}")
    if imputed is not None and imputed.shape != logits.shape:
        raise ValueError(f"imputed_logits must have the shape of logits {tuple(logits.shape)}")


def _loss_shape(logits: torch.Tensor, reduction: str) -> tuple:
    return (logits.shape[0],) if reduction == "none" else ()


@torch.library.custom_op("fairkernels::propensity_loss", mutates_args=())
def propensity_loss_op(
    logits: torch.Tensor,
    labels: torch.Tensor,
    observed: torch.Tensor,
    propensity: Optional[torch.Tensor],
    imputed_logits: Optional[torch.Tensor],
    base: str,
    estimator: str,
    rho10: float,
    rho01: float,
    p_min: float,
    reduction: str,
    nonnegative: str,
    tau: Optional[float],
    lambda_: Optional[float],
    correction: str,
    beta: Optional[float],
    gamma: Optional[float],
) -> torch.Tensor:
    options = PropensityOptions.from_op(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                        correction, beta, gamma)
    return cast(torch.Tensor,
                compute_propensity_loss(logits, labels, observed, propensity, imputed_logits, options, False)[0])


@propensity_loss_op.register_fake
def _(logits, labels, observed, propensity, imputed_logits, base, estimator, rho10, rho01, p_min, reduction,
      nonnegative, tau, lambda_, correction, beta, gamma):
    options = PropensityOptions.from_op(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                        correction, beta, gamma)
    _check_fake(logits, imputed_logits, options)
    return logits.new_empty(_loss_shape(logits, reduction))


@torch.library.custom_op("fairkernels::propensity_loss_fused", mutates_args=())
def propensity_loss_fused_op(
    logits: torch.Tensor,
    labels: torch.Tensor,
    observed: torch.Tensor,
    propensity: Optional[torch.Tensor],
    imputed_logits: Optional[torch.Tensor],
    base: str,
    estimator: str,
    rho10: float,
    rho01: float,
    p_min: float,
    reduction: str,
    nonnegative: str,
    tau: Optional[float],
    lambda_: Optional[float],
    correction: str,
    beta: Optional[float],
    gamma: Optional[float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad_scale, grad_logits, grad_imputed); the derivatives are unscaled (see
    fairkernels.propensity.compute_propensity_loss); grad_imputed is empty unless the estimator
    reads the imputation logits."""
    options = PropensityOptions.from_op(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                        correction, beta, gamma)
    loss, scale, df, dh = compute_propensity_loss(
        logits, labels, observed, propensity, imputed_logits, options, True
    )
    assert scale is not None and df is not None  # want_grad was True
    return loss, scale, df, dh if dh is not None else logits.new_empty((0,))


@propensity_loss_fused_op.register_fake
def _(logits, labels, observed, propensity, imputed_logits, base, estimator, rho10, rho01, p_min, reduction,
      nonnegative, tau, lambda_, correction, beta, gamma):
    options = PropensityOptions.from_op(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                        correction, beta, gamma)
    _check_fake(logits, imputed_logits, options)
    dh = torch.empty_like(logits) if estimator in IMPUTED_ESTIMATORS else logits.new_empty((0,))
    return logits.new_empty(_loss_shape(logits, reduction)), logits.new_empty(()), torch.empty_like(logits), dh


_N_OPTIONS = len(PropensityOptions().as_tuple())


def _setup_context(ctx, inputs, output) -> None:
    logits, imputed_logits, reduction = inputs[0], inputs[4], inputs[10]
    _, scale, df, dh = output
    ctx.save_for_backward(scale, df, dh)
    ctx.per_row = reduction == "none"
    ctx.pairwise = logits.dim() == 2
    ctx.has_imputed = imputed_logits is not None
    ctx.mark_non_differentiable(scale, df, dh)


def gradient_factor(grad_loss: torch.Tensor, scale: torch.Tensor, per_row: bool, pairwise: bool) -> torch.Tensor:
    """The one backward formula of the propensity loss: d loss / d input = factor * the saved
    per-row derivative, with factor = the incoming gradient times grad_scale (reduced loss) or
    the incoming per-row gradient (reduction "none": d (sum_i g_i r_i) / d f_i = g_i dr_i/df_i)."""
    if per_row:
        return grad_loss[:, None] if pairwise else grad_loss
    return grad_loss * scale


def _backward(ctx, grad_loss, _grad_scale, _grad_df, _grad_dh):
    scale, df, dh = ctx.saved_tensors
    factor = gradient_factor(grad_loss, scale, ctx.per_row, ctx.pairwise)
    grad_imputed = dh * factor if ctx.has_imputed else None
    return (df * factor, None, None, None, grad_imputed) + (None,) * _N_OPTIONS


propensity_loss_fused_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerFused(torch.autograd.Function):
    """Eager-mode twin of propensity_loss_fused: same kernel call, same gradient formula.

    The gradient buffers written by the forward pass belong to this node alone, so the first
    backward hands them over instead of allocating new ones: scaled in place, and not touched
    at all when the factor is exactly 1 (the usual ``loss.backward()`` of ips / dr on the CPU).
    A further backward through the same graph (``retain_graph=True``, gradcheck) re-runs the
    kernel on the saved inputs.  Double backward is not supported (once_differentiable)."""

    @staticmethod
    def forward(ctx, logits, imputed_logits, labels, observed, propensity, options):
        loss, scale, df, dh = compute_propensity_loss(
            logits, labels, observed, propensity, imputed_logits, options, True
        )
        ctx.buffers = (scale, df, dh)
        ctx.save_for_backward(logits, imputed_logits, labels, observed, propensity)  # references only
        ctx.options = options
        ctx.per_row = options.reduction == "none"
        ctx.pairwise = logits.dim() == 2
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, imputed_logits, labels, observed, propensity = ctx.saved_tensors
        if ctx.buffers is None:  # the first backward took the buffers: compute them again
            ctx.buffers = compute_propensity_loss(
                logits, labels, observed, propensity, imputed_logits, ctx.options, True
            )[1:]
        scale, df, dh = ctx.buffers
        ctx.buffers = None
        factor = gradient_factor(grad_loss, scale, ctx.per_row, ctx.pairwise)
        is_one = factor.dim() == 0 and not factor.is_cuda and factor.item() == 1.0
        if not is_one:  # on CUDA, .item() would synchronise: always scale there
            df.mul_(factor)
            if dh is not None:
                dh.mul_(factor)
        return df, dh, None, None, None, None


def _data(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return x.detach() if x is not None else None


def propensity_loss_torch(logits, labels, observed, propensity, imputed_logits, options: PropensityOptions,
                          return_grad: bool):
    """Dispatches a torch call: the fused op when a gradient is needed (autograd or
    return_grad), the forward-only op otherwise.  Returns (loss, grad_logits, grad_imputed),
    the gradients None unless return_grad."""
    for name, x in (("labels", labels), ("observed", observed), ("propensity", propensity),
                    ("imputed_logits", imputed_logits)):
        _require_tensor(x, name, logits, "logits")
    args = (labels, observed, propensity)
    data = tuple(_data(x) for x in args)
    if return_grad:
        loss, scale, df, dh = propensity_loss_fused_op(
            logits.detach(), *data, _data(imputed_logits), *options.as_tuple()
        )
        if options.reduction != "none":
            df, dh = df * scale, dh * scale
        return loss, df, (dh if imputed_logits is not None else None)
    needs_grad = torch.is_grad_enabled() and (
        logits.requires_grad or (imputed_logits is not None and imputed_logits.requires_grad)
    )
    if torch.compiler.is_compiling():
        if needs_grad:
            return propensity_loss_fused_op(logits, *data, imputed_logits, *options.as_tuple())[0], None, None
        return propensity_loss_op(logits, *data, imputed_logits, *options.as_tuple()), None, None
    if needs_grad:
        return _EagerFused.apply(logits, imputed_logits, *data, options), None, None
    labels_data, observed_data, propensity_data = data
    loss = compute_propensity_loss(logits.detach(), labels_data, observed_data, propensity_data,
                                   _data(imputed_logits), options, False)[0]
    return loss, None, None


def propensity_diagnostics_torch(logits, labels, observed, propensity, imputed_logits,
                                 options: PropensityOptions) -> dict:
    """The diagnostics of a call (a forward-only kernel call on the detached inputs; eager
    only: the values are Python floats)."""
    if torch.compiler.is_compiling():
        raise RuntimeError("return_diagnostics is not supported under torch.compile: the diagnostics are Python "
                           "floats; call propensity_loss(..., return_diagnostics=True) outside the compiled region")
    diagnostics: dict = {}
    compute_propensity_loss(logits.detach(), _data(labels), _data(observed), _data(propensity),
                            _data(imputed_logits), options, False, diagnostics)
    return diagnostics


# ------------------------------------------------------------------------------------------
# Bandits: GridBounds with its state in torch


def _state_views(tensors: tuple[torch.Tensor, ...]) -> dict[str, _arrays.ArrayView]:
    return {name: _arrays.view(t, name) for name, t in zip(STATE_FIELDS, tensors)}


@torch.library.custom_op(
    "fairkernels::bandit_update",
    mutates_args=("count", "rounds", "total", "sums", "sumsq", "mean", "inv_sqrt", "lambdas"),
)
def bandit_update_op(
    count: torch.Tensor,
    rounds: torch.Tensor,
    total: torch.Tensor,
    sums: torch.Tensor,
    sumsq: torch.Tensor,
    mean: torch.Tensor,
    inv_sqrt: torch.Tensor,
    n_constraints: int,
    arms: torch.Tensor,
    rewards: torch.Tensor,
    residuals: Optional[torch.Tensor],
    weights: Optional[torch.Tensor],
    weight: float,
    lambdas: Optional[torch.Tensor],
    eta: Optional[torch.Tensor],
) -> None:
    state = _state_views((count, rounds, total, sums, sumsq, mean, inv_sqrt))
    status = _arrays.zeros(state["count"], (2,), "int64", "status") if count.is_cuda else None
    lam = _arrays.view(lambdas, "lambdas") if lambdas is not None else None
    step = _arrays.view(eta, "eta") if eta is not None else None
    update_state(state, state_struct(state, n_constraints), arms, rewards, residuals,
                 weights if weights is not None else weight, lam, step, status)


@bandit_update_op.register_fake
def _(count, rounds, total, sums, sumsq, mean, inv_sqrt, n_constraints, arms, rewards, residuals, weights, weight,
      lambdas, eta):
    B = count.shape[0]
    if arms.shape != (B,) or rewards.shape != (B,):
        raise ValueError(f"arms and rewards must have shape ({B},)")
    return None


@torch.library.custom_op("fairkernels::bandit_select", mutates_args=())
def bandit_select_op(
    count: torch.Tensor,
    rounds: torch.Tensor,
    total: torch.Tensor,
    sums: torch.Tensor,
    sumsq: torch.Tensor,
    mean: torch.Tensor,
    inv_sqrt: torch.Tensor,
    n_constraints: int,
    rule: str,
    bound: str,
    alpha: float,
    delta: float,
    horizon: float,
    lambdas: Optional[torch.Tensor],
    want_bounds: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(arms [B], ucb [B, K], lcb [B, M, K]); the bounds are empty unless want_bounds."""
    state = _state_views((count, rounds, total, sums, sumsq, mean, inv_sqrt))
    options = bound_options(bound, alpha, delta, horizon if horizon > 0 else None)
    arms, ucb, lcb = select_arms(state, state_struct(state, n_constraints), options, rule, lambdas, want_bounds)
    # Distinct empty tensors: an op's outputs may not alias each other.
    ucb = ucb if ucb is not None else count.new_empty((0,))
    lcb = lcb if lcb is not None else count.new_empty((0,))
    return arms, ucb, lcb


@bandit_select_op.register_fake
def _(count, rounds, total, sums, sumsq, mean, inv_sqrt, n_constraints, rule, bound, alpha, delta, horizon, lambdas,
      want_bounds):
    B, K = count.shape
    arms = count.new_empty((B,), dtype=torch.int64)
    if not want_bounds:
        return arms, count.new_empty((0,)), count.new_empty((0,))
    return arms, count.new_empty((B, K)), count.new_empty((B, n_constraints, K))


def _state_tensors(bounds: Any) -> tuple[torch.Tensor, ...]:
    arrays = bounds.state_arrays
    return tuple(arrays[name] for name in STATE_FIELDS)


def bandit_update(bounds: Any, arms, rewards, residuals, weight, lambdas: Optional[_arrays.ArrayView],
                  eta: Optional[_arrays.ArrayView]) -> None:
    """GridBounds.update through the custom op (used while torch.compile traces)."""
    weights = weight if isinstance(weight, torch.Tensor) else None
    scalar = 1.0 if weights is not None else float(weight)
    bandit_update_op(*_state_tensors(bounds), bounds.n_constraints, arms, rewards, residuals, weights, scalar,
                     lambdas.array if lambdas is not None else None, eta.array if eta is not None else None)


def bandit_select(bounds: Any, rule: str, lambdas, want_bounds: bool):
    """GridBounds._select through the custom op (used while torch.compile traces)."""
    arms, ucb, lcb = bandit_select_op(*_state_tensors(bounds), bounds.n_constraints, rule, bounds.bound,
                                      bounds.alpha, bounds.delta, bounds.horizon, lambdas, want_bounds)
    return arms, (ucb if want_bounds else None), (lcb if want_bounds else None)
