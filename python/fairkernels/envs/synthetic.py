"""The synthetic environment: Beta score distributions per group and label (no data needed).

Group a: P(y=1) = 0.55, scores Beta(5, 2) | y=1 and Beta(2, 5) | y=0; group b: P(y=1) = 0.45,
Beta(4.5, 2.5) | y=1 and Beta(2, 5.5) | y=0; p0 = 0.5, eps = 0.1, n = 2000, K = 51.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..bandits import EnvTable, make_grid

BASE_RATE = (0.55, 0.45)
SCORE_BETA = {  # (group, label) -> Beta(a, b)
    (0, 1): (5.0, 2.0), (0, 0): (2.0, 5.0),
    (1, 1): (4.5, 2.5), (1, 0): (2.0, 5.5),
}


def beta_survival(tau: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(s >= tau) for s ~ Beta(a, b)."""
    from scipy.special import betainc

    return 1.0 - betainc(a, b, np.clip(tau, 0.0, 1.0))


def make_table(grid: Union[int, Sequence[float]] = 51, *, eps: float = 0.1, p0: float = 0.5, beta: float = 0.05,
               kappa: float = 4.0, cohort: int = 2000, cost: float = 1.0, rho_min: Optional[float] = None) -> EnvTable:
    """The synthetic environment's table."""
    tau = make_grid(grid)
    tpr = np.stack([beta_survival(tau, *SCORE_BETA[(g, 1)]) for g in (0, 1)])
    fpr = np.stack([beta_survival(tau, *SCORE_BETA[(g, 0)]) for g in (0, 1)])
    return EnvTable(tau, np.clip(tpr, 0, 1), np.clip(fpr, 0, 1), np.array(BASE_RATE), p0=p0, beta=beta, kappa=kappa,
                    cohort=cohort, cost=cost, eps=eps, rho_min=rho_min, name="synthetic")
