"""A drop-in TRL ``GRPOTrainer`` whose advantages come from fairkernels (designed and tested
against trl 1.16.0).

TRL computes the advantages inline in ``GRPOTrainer._generate_and_score_completions`` and offers
no hook, so this subclass lets TRL run that method unchanged, keeps the rewards it gathers over
all processes (``_calculate_rewards``), and then replaces ``output["advantages"]`` (this
process's rows) and the advantages TRL logs (``_logs["advantages"]``, all processes) with
fairkernels' ones::

    from fairkernels.integrations.trl import GRPOTrainer

    trainer = GRPOTrainer(model, reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                          advantage_options={"beta_rank": 0.25})

``advantage_options`` takes the keyword arguments of :func:`fairkernels.group_advantages`
(``beta_rank``, ``baseline``, ``scale``, ``eps``, ``unbiased``, ``singleton``, ``likelihood``,
``ties``, ``pass_k`` for pass@k advantages, ``signal_tol``).  The defaults reproduce TRL's
numbers: ``eps=1e-4``, ``scale=args.scale_rewards``,
NaN rewards (every reward function returned None) left out and given 0, so with
``beta_rank=0`` the advantages equal TRL's own.  With ``beta_rank != 0`` the responses of each
group are ranked by their mean (``likelihood="sum"``: summed) token log-prob under the loss mask:
TRL's ``old_per_token_logps`` where it computed them, otherwise one extra no-grad forward pass
of the policy; the per-sequence values are gathered over the processes like the rewards.
Only ``multi_objective_aggregation="sum_then_normalize"`` (TRL's default) is supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, cast

try:
    import torch
    import trl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("fairkernels.integrations.trl needs trl and torch: pip install 'fairkernels[trl]'") from error

import fairkernels

__all__ = [
    "AdvantageBatch",
    "GRPOTrainer",
    "OPTION_KEYS",
    "advantage_options_for",
    "gathered_advantages",
    "process_rows",
    "sequence_logps",
]

OPTION_KEYS = ("beta_rank", "baseline", "scale", "eps", "unbiased", "singleton", "likelihood", "ties", "pass_k",
               "signal_tol")
TRL_EPS = 1e-4  # TRL divides by (std + 1e-4)


@dataclass(frozen=True)
class AdvantageBatch:
    """What the trainer fed to fairkernels for the last generation batch (all processes)."""

    rewards: torch.Tensor  # [N] weighted sum of the reward functions, NaN = unscorable
    seq_logp: Optional[torch.Tensor]  # [N] per-sequence likelihoods, None when beta_rank == 0
    advantages: torch.Tensor  # [N]


def advantage_options_for(options: Optional[Mapping[str, Any]], scale_rewards: str) -> dict[str, Any]:
    """The group_advantages keywords: TRL's conventions, overridden by ``options``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown advantage_options key {unknown[0]!r}; known: {', '.join(OPTION_KEYS)}")
    merged = {"eps": TRL_EPS, "scale": scale_rewards, "baseline": "mean", "singleton": "zero", **options}
    probe = torch.zeros(1)
    try:  # validates every value with group_advantages itself
        fairkernels.group_advantages(probe, group_size=1, seq_logp=probe, **merged)
    except (TypeError, ValueError) as error:
        raise type(error)(f"advantage_options: {error}") from error
    return merged


def gathered_advantages(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    num_generations: int,
    options: Mapping[str, Any],
    seq_logp: Optional[torch.Tensor] = None,
) -> AdvantageBatch:
    """Advantages of the whole gathered batch (rows of all processes, process-major, groups of
    ``num_generations`` consecutive rows, as TRL lays them out)."""
    if rewards_per_func.dim() != 2 or rewards_per_func.shape[1] != reward_weights.numel():
        raise ValueError(
            f"rewards_per_func must be [N, {reward_weights.numel()}] (one column per reward function), "
            f"got {tuple(rewards_per_func.shape)}"
        )
    # TRL's own reduction (same ops, same numbers): weighted nansum, unscorable rows NaN.
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    kernel_options = {k: v for k, v in options.items() if k != "likelihood"}  # seq_logp is already reduced
    with torch.no_grad():
        advantages = fairkernels.group_advantages(
            rewards, group_size=num_generations, seq_logp=seq_logp, **kernel_options
        )
    return AdvantageBatch(rewards, seq_logp, cast(torch.Tensor, advantages))


def process_rows(gathered: torch.Tensor, process_index: int, local_size: int) -> torch.Tensor:
    """This process's rows of a gathered [N] tensor: TRL's ``process_slice``."""
    start = process_index * local_size
    if start + local_size > gathered.shape[0]:
        raise ValueError(
            f"process {process_index} with {local_size} local rows lies outside the {gathered.shape[0]} gathered rows"
        )
    return gathered[start : start + local_size]


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-sequence mean (or sum) of the token log-probs under ``mask``; padding never read."""
    selected = mask != 0
    total = torch.where(selected, per_token_logps, torch.zeros_like(per_token_logps)).sum(dim=1)
    if likelihood == "sum":
        return total
    return total / selected.sum(dim=1).clamp(min=1).to(total.dtype)  # empty rows: 0, as fairkernels


class GRPOTrainer(trl.GRPOTrainer):
    """``trl.GRPOTrainer`` with fairkernels advantages; ``advantage_options`` as in the module doc.

    After each generation batch, :attr:`fairkernels_batch` holds the gathered rewards,
    likelihoods and advantages that were used."""

    def __init__(self, *args: Any, advantage_options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "fairkernels.integrations.trl.GRPOTrainer supports multi_objective_aggregation='sum_then_normalize' "
                f"only, got {self.multi_objective_aggregation!r}"
            )
        self.advantage_options = advantage_options_for(advantage_options, self.scale_rewards)
        self.fairkernels_batch: Optional[AdvantageBatch] = None
        self._gathered_rewards: Optional[torch.Tensor] = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._gathered_rewards

    def _generate_and_score_completions(self, inputs):
        self._gathered_rewards = None
        output = super()._generate_and_score_completions(inputs)
        if self._gathered_rewards is None:
            raise RuntimeError(
                "trl's _generate_and_score_completions did not call _calculate_rewards: this trl differs from 1.16.0, "
                "fairkernels cannot replace its advantages"
            )
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        seq_logp = None
        if self.advantage_options.get("beta_rank", 0.0) != 0.0:
            seq_logp = self.accelerator.gather(self._local_sequence_logps(output, mode))
        batch = gathered_advantages(
            self._gathered_rewards, self.reward_weights, num_generations, self.advantage_options, seq_logp
        )
        local = process_rows(batch.advantages, self.accelerator.process_index, output["advantages"].shape[0])
        if local.shape != output["advantages"].shape:  # TRL changed its layout: never train on wrong rows
            raise RuntimeError(
                f"advantages of shape {tuple(local.shape)} for TRL's {tuple(output['advantages'].shape)}"
            )
        output["advantages"] = local.to(output["advantages"].dtype)
        self._replace_logged_advantages(batch.advantages)
        self.fairkernels_batch = batch
        return output

    def _local_sequence_logps(self, output: dict[str, Any], mode: str) -> torch.Tensor:
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]  # TRL's loss mask
        per_token = output.get("old_per_token_logps")
        if per_token is None:
            if "pixel_values" in output:
                raise ValueError(
                    "beta_rank != 0 on multimodal inputs needs TRL's old_per_token_logps "
                    "(e.g. steps_per_generation > gradient_accumulation_steps); "
                    "this trainer computes them for text only"
                )
            per_token = self._policy_token_logps(output, mode)
        return sequence_logps(per_token, mask, self.advantage_options.get("likelihood", "mean"))

    def _policy_token_logps(self, output: dict[str, Any], mode: str) -> torch.Tensor:
        """The policy's token log-probs of the completions, as TRL computes old_per_token_logps."""
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with torch.no_grad():
            per_token, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1),
                torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1),
                output["completion_ids"].size(1),
                batch_size=batch_size,
            )
        return per_token

    def _replace_logged_advantages(self, advantages: torch.Tensor) -> None:
        """TRL has just appended its own gathered advantages to _logs["advantages"]."""
        logged: Any = self._logs["advantages"]  # a deque in TRL 1.16.0
        for _ in range(min(advantages.shape[0], len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
