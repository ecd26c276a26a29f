"""fairkernels advantage estimators for verl (designed and tested against verl 0.9.1).

Importing this module registers five estimators in verl's registry
(``verl.trainer.ppo.core_algos.register_adv_est``), selected with ``algorithm.adv_estimator``:

================  ==========================================================================
``fk_grpo``       verl's ``grpo`` numbers (its per-uid loop): ``(r - mean) / (std + 1e-6)``,
                  singletons ``r / (1 + 1e-6)``; ``algorithm.norm_adv_by_std_in_grpo=False``
                  drops the division, as in verl.
``fk_drgrpo``     Dr. GRPO: ``r - mean`` (singletons keep ``r``).
``fk_rloo``       verl's ``rloo``: ``r - mean of the other responses`` (singletons keep ``r``).
``fk_unlikely``   ``fk_grpo`` with the unlikeliness rank reweighting (He et al. 2025),
                  ``beta_rank = 0.25`` by default, ranked by the mean ``old_log_probs`` of each
                  response under the response mask.
``fk_passk``      GRPO with pass@k advantages (the expected best reward of k responses is
                  optimised; ``pass_k = 8`` by default), exact for any real scores.
================  ==========================================================================

Options live under one key of the ``algorithm`` section, ``algorithm.fairkernels``
(on the command line ``+algorithm.fairkernels.beta_rank=0.1``): ``beta_rank``, ``baseline``,
``scale``, ``eps``, ``unbiased``, ``singleton``, ``likelihood``, ``ties``, ``pass_k``,
``signal_tol`` (the keyword arguments
of :func:`fairkernels.group_advantages`); they override the estimator's defaults.  An unknown
key is a ``ValueError`` naming it.

The scores are ``token_level_rewards.sum(-1)`` as in verl; the uids are mapped to integer group
ids by one ``np.unique`` call.  NaN scores mean "no reward" (fairkernels' convention): such a
response is left out of its group and gets advantage 0, where verl's own estimators turn the
whole group's advantages into NaN.  An integer response mask (verl's agent loop builds int64
0/1 masks) is read as a selector: non-zero = response token.

How ``fk_unlikely`` gets the log-probs: verl passes no log-probs to a registered estimator, but
the ``DataProto`` handed to ``verl.trainer.ppo.ray_trainer.compute_advantage`` already holds
``old_log_probs`` (the trainer computes them first).  Importing this module therefore wraps
``compute_advantage`` (in ``ray_trainer`` and in every loaded verl module that imported it by
name, e.g. ``verl.trainer.ppo.v1.utils``): for an ``fk_`` estimator the wrapper exposes
``data.batch["old_log_probs"]`` to the estimator for the duration of the call and otherwise
calls verl's function unchanged.  It fails loudly instead of falling back to plain GRPO: when
``compute_advantage`` no longer has the signature of verl 0.9.1, when the batch has no
``old_log_probs``, when an estimator that ranks is called outside the wrapper, and when the
wrapped call returns without having called the registered estimator.  The lines a user adds::

    export VERL_USE_EXTERNAL_MODULES=fairkernels.integrations.verl
    python -m verl.trainer.main_ppo algorithm.adv_estimator=fk_unlikely \\
        +algorithm.fairkernels.beta_rank=0.25 ...
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional, Tuple, cast

import numpy as np

try:
    import torch
    from verl.trainer.ppo import core_algos
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fairkernels.integrations.verl needs verl and torch: pip install 'fairkernels[verl]'"
    ) from error

import fairkernels

__all__ = [
    "CONFIG_KEY",
    "ESTIMATORS",
    "OPTION_KEYS",
    "estimator_options",
    "install_log_prob_hook",
    "uid_to_group_ids",
]

CONFIG_KEY = "fairkernels"
OPTION_KEYS = ("beta_rank", "baseline", "scale", "eps", "unbiased", "singleton", "likelihood", "ties", "pass_k",
               "signal_tol")
LOG_PROB_KEY = "old_log_probs"

# Defaults of each estimator, in group_advantages' keywords; "scale" of the GRPO-like ones
# follows algorithm.norm_adv_by_std_in_grpo unless set under algorithm.fairkernels.
_GRPO = {"baseline": "mean", "scale": "group", "singleton": "raw", "eps": 1e-6}
ESTIMATORS: dict[str, dict[str, Any]] = {
    "fk_grpo": dict(_GRPO),
    "fk_drgrpo": {**_GRPO, "scale": "none"},
    "fk_rloo": {"baseline": "loo", "scale": "none", "singleton": "raw", "eps": 1e-6},
    "fk_unlikely": {**_GRPO, "beta_rank": 0.25},
    "fk_passk": {**_GRPO, "pass_k": 8},
}
_FOLLOWS_NORM_ADV = ("fk_grpo", "fk_unlikely", "fk_passk")


# ---- options -------------------------------------------------------------------------------


def _section(config: Any) -> dict[str, Any]:
    """The ``algorithm.fairkernels`` mapping as a plain dict (DictConfig, dict, verl's AlgoConfig)."""
    if config is None:
        return {}
    section = config.get(CONFIG_KEY, None)
    if section is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(section, DictConfig):
            section = OmegaConf.to_container(section, resolve=True)
    except ImportError:  # pragma: no cover - verl depends on omegaconf
        pass
    if not isinstance(section, Mapping):
        raise TypeError(f"algorithm.{CONFIG_KEY} must be a mapping of options, got {type(section).__name__}")
    return dict(section)


def _validated(options: dict[str, Any]) -> None:
    """Checks the option values with group_advantages itself (a one-row call: microseconds)."""
    probe = np.zeros(1, dtype=np.float32)
    try:
        fairkernels.group_advantages(probe, group_size=1, seq_logp=probe, **options)
    except (TypeError, ValueError) as error:
        raise type(error)(f"algorithm.{CONFIG_KEY}: {error}") from error


def estimator_options(name: str, config: Any = None) -> dict[str, Any]:
    """The keyword arguments of :func:`fairkernels.group_advantages` that estimator ``name``
    uses under the verl ``algorithm`` config ``config`` (None: the defaults)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown fairkernels estimator {name!r}; known: {', '.join(ESTIMATORS)}")
    user = _section(config)
    unknown = sorted(set(user) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown option algorithm.{CONFIG_KEY}.{unknown[0]}"
            f"{' (and ' + ', '.join(unknown[1:]) + ')' if len(unknown) > 1 else ''}; "
            f"known options: {', '.join(OPTION_KEYS)}"
        )
    options = dict(ESTIMATORS[name])
    if name in _FOLLOWS_NORM_ADV and config is not None and not config.get("norm_adv_by_std_in_grpo", True):
        options["scale"] = "none"
    options.update(user)
    _validated(options)
    return options


# ---- batch preparation ---------------------------------------------------------------------


def uid_to_group_ids(index: Any, n_rows: int) -> np.ndarray:
    """int64 group ids for verl's ``uid`` array (one entry per response), equal ids for equal
    uids, as verl's loop groups them: one ``np.unique`` call, no Python loop over rows."""
    if index is None:
        raise ValueError("fairkernels estimators need index (data.non_tensor_batch['uid']) to form the groups")
    uids = np.asarray(index)
    if uids.ndim != 1 or uids.shape[0] != n_rows:
        raise ValueError(
            f"index (data.non_tensor_batch['uid']) must have one entry per response: "
            f"shape {uids.shape}, batch of {n_rows} responses"
        )
    if uids.dtype.kind in "iub":
        return uids.astype(np.int64, copy=False)
    try:
        _, inverse = np.unique(uids, return_inverse=True)
    except TypeError as error:
        kinds = sorted({type(u).__name__ for u in uids[:1000]})
        raise TypeError(f"index (uid) values must be mutually comparable (e.g. all str), got {kinds}") from error
    return inverse.reshape(-1).astype(np.int64, copy=False)


def _check_batch(token_level_rewards: Any, response_mask: Any) -> None:
    for name, value in (("token_level_rewards", token_level_rewards), ("response_mask", response_mask)):
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a [batch, response_length] tensor, got {shape}")
    if response_mask.shape != token_level_rewards.shape:
        raise ValueError(
            f"response_mask has shape {tuple(response_mask.shape)} "
            f"but token_level_rewards has shape {tuple(token_level_rewards.shape)}"
        )


# ---- old_log_probs for the estimators that rank ----------------------------------------------


@dataclass
class _Handover:
    """What the compute_advantage wrapper hands to the estimator it expects to be called."""

    estimator: str
    log_probs: Optional[torch.Tensor]
    called: bool = field(default=False)


_HANDOVER: contextvars.ContextVar[Optional[_Handover]] = contextvars.ContextVar("fairkernels_verl", default=None)
_HOOK_MARK = "__fairkernels_log_prob_hook__"
_EXPECTED_PARAMETERS = ("data", "adv_estimator", "config")


def _estimator_name(adv_estimator: Any) -> str:
    return adv_estimator.value if isinstance(adv_estimator, Enum) else str(adv_estimator)


def _log_probs_for(name: str, response_mask: torch.Tensor) -> torch.Tensor:
    handover = _HANDOVER.get()
    if handover is None or handover.estimator != name:
        raise RuntimeError(
            f"{name} with beta_rank != 0 needs the sequence log-probs, which verl does not pass to a registered "
            "estimator: call it through verl.trainer.ppo.ray_trainer.compute_advantage after "
            "fairkernels.integrations.verl.install_log_prob_hook() (importing fairkernels.integrations.verl, "
            "e.g. via VERL_USE_EXTERNAL_MODULES=fairkernels.integrations.verl, installs it)"
        )
    log_probs = handover.log_probs
    if log_probs is None:
        raise ValueError(
            f"{name} with beta_rank != 0 ranks responses by data.batch['{LOG_PROB_KEY}'], which this batch lacks: "
            "compute advantages after the old log-probs (as verl's trainers do) or set "
            f"+algorithm.{CONFIG_KEY}.beta_rank=0"
        )
    if tuple(log_probs.shape) != tuple(response_mask.shape):
        raise ValueError(
            f"data.batch['{LOG_PROB_KEY}'] has shape {tuple(log_probs.shape)} "
            f"but response_mask has shape {tuple(response_mask.shape)}"
        )
    return log_probs


def _mark_called(name: str) -> None:
    handover = _HANDOVER.get()
    if handover is not None and handover.estimator == name:
        handover.called = True


def install_log_prob_hook() -> Callable[..., Any]:
    """Wraps verl's ``compute_advantage`` so that ``fk_`` estimators can read
    ``data.batch["old_log_probs"]``; idempotent; returns the wrapper.  Raises RuntimeError when
    verl's ``compute_advantage`` differs from the one this was designed against (verl 0.9.1)."""
    from verl.trainer.ppo import ray_trainer

    current = getattr(ray_trainer, "compute_advantage", None)
    if current is None:
        raise RuntimeError("verl.trainer.ppo.ray_trainer.compute_advantage is gone: this verl is not supported")
    if getattr(current, _HOOK_MARK, False):
        return current
    parameters = inspect.signature(current).parameters
    missing = [p for p in _EXPECTED_PARAMETERS if p not in parameters]
    if missing or list(parameters)[:2] != list(_EXPECTED_PARAMETERS[:2]):
        raise RuntimeError(
            f"verl.trainer.ppo.ray_trainer.compute_advantage{inspect.signature(current)} no longer has the "
            "signature (data, adv_estimator, ..., config) of verl 0.9.1: "
            "the fk_unlikely log-prob hook cannot be installed"
        )
    wrapper = _wrap_compute_advantage(current, inspect.signature(current))
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "verl" and getattr(module, "compute_advantage", None) is current:
            module.compute_advantage = wrapper  # type: ignore[attr-defined]  # modules that imported it
    return wrapper


def _wrap_compute_advantage(original: Callable[..., Any], signature: inspect.Signature) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_advantage(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        name = _estimator_name(bound.arguments["adv_estimator"])
        if name not in ESTIMATORS:
            return original(*args, **kwargs)
        data = bound.arguments["data"]
        log_probs = data.batch[LOG_PROB_KEY] if LOG_PROB_KEY in data.batch.keys() else None
        handover = _Handover(name, log_probs)
        token = _HANDOVER.set(handover)
        try:
            result = original(*args, **kwargs)
        finally:
            _HANDOVER.reset(token)
        if not handover.called:
            raise RuntimeError(
                f"verl's compute_advantage returned without calling the registered estimator {name}: its dispatch "
                "differs from verl 0.9.1's, so fairkernels cannot supply the log-probs; please report this"
            )
        return result

    setattr(compute_advantage, _HOOK_MARK, True)
    return compute_advantage


# ---- the estimators ------------------------------------------------------------------------


def _estimate(
    name: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    config: Any,
    old_log_probs: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    options = estimator_options(name, config)
    _check_batch(token_level_rewards, response_mask)
    scores = token_level_rewards.sum(dim=-1)  # verl's outcome score, same reduction
    group_ids = torch.from_numpy(uid_to_group_ids(index, scores.shape[0])).to(scores.device)
    token_logp = None
    if options.get("beta_rank", 0.0) != 0.0:
        token_logp = old_log_probs if old_log_probs is not None else _log_probs_for(name, response_mask)
    _mark_called(name)
    with torch.no_grad():
        advantages = fairkernels.group_advantages(
            scores,  # any layout: the input layer copies what the kernel cannot read in place
            group_ids=group_ids,
            token_logp=token_logp,
            mask=response_mask,  # integer masks (verl's) select: nonzero = response token
            **options,
        )
    return cast(torch.Tensor, advantages), cast(torch.Tensor, advantages)


def _make_estimator(name: str) -> Callable[..., Tuple[torch.Tensor, torch.Tensor]]:
    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        config: Any = None,
        reward_baselines: Optional[torch.Tensor] = None,  # passed by verl when present; not used
        old_log_probs: Optional[torch.Tensor] = None,  # used if a later verl passes it directly
        **unused: Any,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return _estimate(name, token_level_rewards, response_mask, index, config, old_log_probs)

    estimator.__name__ = estimator.__qualname__ = f"compute_{name}_advantage"
    estimator.__doc__ = f"verl advantage estimator {name!r} (fairkernels); returns (advantages, returns), both [bs, T]."
    return estimator


def _register_all() -> None:
    for name in ESTIMATORS:
        existing = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if existing is not None and existing.__module__ == __name__:
            continue  # this module imported twice under one name (e.g. reloaded): keep the first
        core_algos.register_adv_est(name)(_make_estimator(name))


_register_all()
try:
    install_log_prob_hook()
except ImportError as error:  # ray_trainer imports packages that verl 0.9.1 does not declare
    raise ImportError(
        f"fairkernels.integrations.verl could not import verl.trainer.ppo.ray_trainer ({error}): "
        "pip install 'fairkernels[verl]' (adds cachetools, uvicorn, fastapi)"
    ) from error
