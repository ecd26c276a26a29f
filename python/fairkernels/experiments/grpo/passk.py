"""Unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

With ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n - c, k) / C(n, k)``,
computed as a product to stay stable for large ``n``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the probability that at least one of ``k`` samples is correct."""
    for name, val in (("n", n), ("c", c), ("k", k)):
        if not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in 0..n={n}, got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n={n}, got {k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(n: int, correct: Sequence[int], ks: Sequence[int]) -> dict[int, float]:
    """Mean over problems of pass@k for each k; ``correct[j]`` = #correct of problem j."""
    if len(correct) == 0:
        raise ValueError("correct must hold at least one problem")
    return {int(k): float(np.mean([pass_at_k(n, int(c), int(k)) for c in correct])) for k in ks}
