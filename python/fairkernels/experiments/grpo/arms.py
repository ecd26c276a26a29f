"""The arms of the experiment (kept free of torch so the CLI can list them cheaply)."""

from __future__ import annotations

#: arm name -> (beta_rank, PPO epochs per batch, pass_k); "base" is the base policy without RL.
#: "passk": GRPO with pass@k advantages (k = 8: the expected best of 8 samples is optimised).
ARMS: dict[str, tuple[float, int, int | None] | None] = {
    "base": None,
    "grpo": (0.0, 1, None),
    "unlikeliness": (0.25, 1, None),
    "grpo_2epochs": (0.0, 2, None),
    "passk": (0.0, 1, 8),
}
