"""The arms of the experiment (kept free of torch so the CLI can list them cheaply)."""

from __future__ import annotations

#: arm name -> (beta_rank, PPO epochs per batch); "base" is the base policy without RL.
ARMS: dict[str, tuple[float, int] | None] = {
    "base": None,
    "grpo": (0.0, 1),
    "unlikeliness": (0.25, 1),
    "grpo_2epochs": (0.0, 2),
}
