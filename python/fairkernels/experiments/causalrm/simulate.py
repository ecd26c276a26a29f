"""Simulated observational feedback, as in the CausalRM protocol (spec: propensity.md).

A fixed random teacher scores x ~ N(0, I_d); the rating level (1..5) is the equal-quantile bin
of the score plus noise, the clean label is level >= 4.  Feedback is observed with propensity
min(1, k alpha^(5 - level)) (k sets about 20% observed), and observed labels are flipped with
rates rho10 = P(1 | 0) and rho01 = P(0 | 1).  The test set is fresh, fully observed and clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    x: np.ndarray          # [n, d] float32
    clean: np.ndarray      # [n] clean labels (0/1)
    noisy: np.ndarray      # [n] observed noisy labels, 0 where unobserved
    observed: np.ndarray   # [n] bool
    propensity: np.ndarray  # [n] true P(observed | row)
    level: np.ndarray      # [n] rating level 1..5


@dataclass(frozen=True)
class Simulation:
    train: Split
    val: Split
    test: Split


class Teacher:
    """s = v . tanh(1.5 (W x + b)) + 0.5 u . x, standardised on a reference sample."""

    def __init__(self, rng: np.random.Generator, dim: int, hidden: int = 32) -> None:
        self.w = rng.normal(size=(dim, hidden)) / np.sqrt(dim)
        self.b = rng.normal(size=hidden) * 0.5
        self.v = rng.normal(size=hidden) / np.sqrt(hidden)
        self.u = rng.normal(size=dim) / np.sqrt(dim)
        reference = rng.normal(size=(50_000, dim))
        raw = self._raw(reference)
        self.mean, self.std = raw.mean(), raw.std()
        # level bins: equal quantiles of the noisy score on the reference sample
        noisy = (raw - self.mean) / self.std + 0.5 * rng.normal(size=raw.shape)
        self.edges = np.quantile(noisy, [0.2, 0.4, 0.6, 0.8])

    def _raw(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(1.5 * (x @ self.w + self.b)) @ self.v + 0.5 * x @ self.u

    def levels(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        score = (self._raw(x) - self.mean) / self.std
        return 1 + np.searchsorted(self.edges, score + 0.5 * rng.normal(size=score.shape))


def observe(level: np.ndarray, alpha: float, observed_fraction: float, rng: np.random.Generator):
    """Propensities alpha^(5 - level) scaled so that about observed_fraction of rows are seen."""
    raw = np.power(float(alpha), 5 - level)
    k = observed_fraction * len(level) / raw.sum()
    propensity = np.minimum(1.0, k * raw)
    return propensity, rng.random(len(level)) < propensity


def flip(clean: np.ndarray, observed: np.ndarray, rho10: float, rho01: float, rng: np.random.Generator):
    """Noisy labels on observed rows: 0 -> 1 with rate rho10, 1 -> 0 with rate rho01; 0 elsewhere."""
    u = rng.random(len(clean))
    noisy = np.where(clean == 1, u >= rho01, u < rho10).astype(np.float32)
    return np.where(observed, noisy, 0.0).astype(np.float32)


def simulate(seed: int, alpha: float, rho10: float, rho01: float, *, pool: int = 20_000, test: int = 20_000,
             dim: int = 32, observed_fraction: float = 0.2, val_fraction: float = 0.2) -> Simulation:
    """One cell of the grid.  The teacher and x depend on the seed only, so the alpha and noise
    settings of one seed share their data up to the observation and flips."""
    teacher_rng = np.random.default_rng([seed, 0])
    teacher = Teacher(teacher_rng, dim)
    x = teacher_rng.normal(size=(pool + test, dim))
    level = teacher.levels(x, teacher_rng)
    clean = (level >= 4).astype(np.float32)
    rng = np.random.default_rng([seed, 1, int(round(alpha * 1e6)), int(round(rho10 * 1e6)), int(round(rho01 * 1e6))])
    x_pool, lv_pool, y_pool = x[:pool], level[:pool], clean[:pool]
    propensity, observed = observe(lv_pool, alpha, observed_fraction, rng)
    noisy = flip(y_pool, observed, rho10, rho01, rng)
    n_val = int(round(pool * val_fraction))

    def split(rows: slice) -> Split:
        return Split(x_pool[rows].astype(np.float32), y_pool[rows], noisy[rows], observed[rows],
                     propensity[rows].astype(np.float32), lv_pool[rows])

    x_test = x[pool:].astype(np.float32)
    ones = np.ones(test, dtype=bool)
    test_split = Split(x_test, clean[pool:], clean[pool:], ones, np.ones(test, dtype=np.float32), level[pool:])
    return Simulation(split(slice(n_val, pool)), split(slice(0, n_val)), test_split)
