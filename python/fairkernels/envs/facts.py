"""The facts an environment prints: oracle, unconstrained best, feasible count, blocking margin.

Computed from the table at each threshold's steady group share (expected values); the
experiment also reports the oracle found by simulating every fixed threshold."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..bandits import EnvTable


@dataclass(frozen=True)
class EnvFacts:
    oracle_arm: Optional[int]
    oracle_threshold: Optional[float]
    oracle_reward: Optional[float]
    oracle_residual: Optional[float]
    best_arm: int
    best_threshold: float
    best_reward: float
    best_residual: float
    n_feasible: int
    blocking_arm: Optional[int]
    blocking_margin: Optional[float]
    constraint_binds: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, n_rounds: int, cohort: int) -> str:
        lines = []
        if self.oracle_arm is None:
            lines.append("oracle: no feasible threshold")
        else:
            lines.append(f"oracle threshold {self.oracle_threshold:.3f} (arm {self.oracle_arm}): "
                         f"reward {self.oracle_reward:.4f}, residual {self.oracle_residual:+.4f}")
        lines.append(f"unconstrained best {self.best_threshold:.3f} (arm {self.best_arm}): reward "
                     f"{self.best_reward:.4f}, residual {self.best_residual:+.4f}"
                     + ("" if self.constraint_binds else "  -> FEASIBLE: the constraint does not bind"))
        lines.append(f"feasible grid points: {self.n_feasible}")
        if self.blocking_margin is not None:
            need = (2.0 / self.blocking_margin) ** 2 * 2 * math.log(n_rounds * cohort)
            lines.append(f"blocking margin {self.blocking_margin:.4f} (arm {self.blocking_arm}): ruling it out "
                         f"needs ~{need:,.0f} individuals = ~{need / cohort:,.1f} rounds on it (T = {n_rounds})")
        return "\n".join(lines)


def env_facts(env: EnvTable) -> EnvFacts:
    steady = env.expected_steady()
    reward, residual = steady["reward"], steady["residual"].max(axis=0)
    feasible = residual <= 0
    best = int(np.argmax(reward))
    oracle = int(np.flatnonzero(feasible)[np.argmax(reward[feasible])]) if feasible.any() else None
    blocking = None
    if oracle is not None:
        better = np.flatnonzero(~feasible & (reward > reward[oracle]))
        if better.size:
            blocking = int(better[np.argmin(np.abs(better - oracle))])
    return EnvFacts(
        oracle_arm=oracle,
        oracle_threshold=None if oracle is None else float(env.grid[oracle]),
        oracle_reward=None if oracle is None else float(reward[oracle]),
        oracle_residual=None if oracle is None else float(residual[oracle]),
        best_arm=best, best_threshold=float(env.grid[best]), best_reward=float(reward[best]),
        best_residual=float(residual[best]), n_feasible=int(feasible.sum()),
        blocking_arm=blocking, blocking_margin=None if blocking is None else float(residual[blocking]),
        constraint_binds=bool(residual[best] > 0),
    )
