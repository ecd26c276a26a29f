"""Readable numpy reference of the bandits contract (cpp/bandits.h), one learner at a time.

State per learner: count[K], rounds[K], total, sum/sumsq/mean[V, K] (V = 1 + M, reward first).
The formulas mirror the kernels' operation order, so arms agree exactly on random inputs.
"""

from __future__ import annotations

import math

import numpy as np


class ReferenceBounds:
    def __init__(self, B: int, K: int, M: int, bound: str = "ucb1", alpha: float = 2.0, delta: float = 0.05,
                 horizon: float = 0.0):
        self.B, self.K, self.M, self.V = B, K, M, 1 + M
        self.bound, self.alpha, self.delta, self.horizon = bound, alpha, delta, horizon
        self.count = np.zeros((B, K))
        self.rounds = np.zeros((B, K))
        self.total = np.zeros(B)
        self.sum = np.zeros((B, self.V, K))
        self.sumsq = np.zeros((B, self.V, K))

    def update(self, arms, rewards, residuals, weight):
        weight = np.broadcast_to(np.asarray(weight, dtype=float), (self.B,))
        # The overflow rule: an observation that would make a learner's total count (a float64
        # sum of weights) infinite is rejected, and the whole update with it.
        with np.errstate(over="ignore"):
            fits = np.all(np.isfinite(self.total + weight))
        if not fits:
            raise ValueError("weight: too large, the learner's total count would overflow")
        for b in range(self.B):
            k, w = int(arms[b]), float(weight[b])
            assert 0 <= k < self.K and w > 0
            values = [float(rewards[b])] + [float(residuals[b, j]) for j in range(self.M)]
            self.count[b, k] += w
            self.rounds[b, k] += 1
            self.total[b] += w
            for v, x in enumerate(values):
                self.sum[b, v, k] += w * x
                self.sumsq[b, v, k] += w * x * x

    def _factor(self, b: int) -> float:
        t_seen = max(self.total[b], 2.0)
        t = self.horizon if self.horizon > 0 else t_seen
        if self.bound == "ucb1":
            return math.sqrt(self.alpha * math.log(t_seen))
        if self.bound == "hoeffding":
            return math.sqrt(self._log_confidence(t) / 2)
        return self._log_confidence(t)

    def _log_confidence(self, t: float) -> float:
        """log(2 K T / delta), in log space where the product overflows float64."""
        with np.errstate(over="ignore"):
            x = 2.0 * self.K * t / self.delta
        if math.isfinite(x):
            return math.log(x)
        return math.log(2.0 * self.K) + math.log(t) - math.log(self.delta)

    def radius(self, b: int, v: int, k: int) -> float:
        w = self.count[b, k]
        if w <= 0:
            return math.inf
        scale = 1.0 if v == 0 else 2.0
        factor = self._factor(b)
        if self.bound != "bernstein":
            return scale * (factor * (1.0 / math.sqrt(w)))
        if w <= 1:
            return math.inf
        mean = self.sum[b, v, k] / w
        var = scale * scale / 4
        if self.rounds[b, k] >= 2:
            var = (self.sumsq[b, v, k] - w * (mean * mean)) / (self.rounds[b, k] - 1)
            var = min(max(var, 0.0), scale * scale / 4)
        return math.sqrt(2.0 * var * factor / w) + 7.0 * scale * factor / (3.0 * (w - 1))

    def mean(self, b: int, v: int, k: int) -> float:
        w = self.count[b, k]
        return self.sum[b, v, k] / w if w > 0 else 0.0

    def bounds(self):
        ucb = np.empty((self.B, self.K))
        lcb = np.empty((self.B, self.M, self.K))
        for b in range(self.B):
            for k in range(self.K):
                ucb[b, k] = self.mean(b, 0, k) + self.radius(b, 0, k)
                for j in range(self.M):
                    lcb[b, j, k] = self.mean(b, 1 + j, k) - self.radius(b, 1 + j, k)
        return ucb, lcb

    def select(self, rule: str, lambdas=None):
        ucb, lcb = self.bounds()
        arms = np.empty(self.B, dtype=np.int64)
        for b in range(self.B):
            if rule == "ucb":
                arms[b] = int(np.argmax(ucb[b]))  # first maximum
            elif rule == "primal_dual":
                penalty = np.zeros(self.K)
                for j in range(self.M):
                    penalty += lambdas[b, j] * np.array([self.mean(b, 1 + j, k) for k in range(self.K)])
                arms[b] = int(np.argmax(ucb[b] - penalty))
            else:
                feasible = np.all(lcb[b] <= 0, axis=0)
                if feasible.any():
                    score = np.where(feasible, ucb[b], -np.inf)
                    arms[b] = int(np.flatnonzero(feasible)[np.argmax(score[feasible])])
                else:
                    arms[b] = int(np.argmin(np.maximum(lcb[b], 0).sum(axis=0)))
        return arms


# ---------------------------------------------------------------------------------------------
# Per-group thresholds: the product grid and the expected outcome of a pair of thresholds.


def reference_product_grid(grid_a, grid_b):
    """[K_a * K_b, 2] pairs, arm k = k_a * K_b + k_b (two explicit loops)."""
    pairs = []
    for tau_a in grid_a:
        for tau_b in grid_b:
            pairs.append((float(tau_a), float(tau_b)))
    return np.array(pairs)


def reference_pair_outcome(tpr, fpr, base_rate, k_a, k_b, share, cost, eps):
    """Expected (reward, DP residual, next group-a share given the acceptance gap) of one round
    at share ``share`` when group a is accepted at table column k_a and group b at k_b."""
    accept, positives, negatives = [], 0.0, 0.0
    for g, k in ((0, k_a), (1, k_b)):
        weight = share if g == 0 else 1.0 - share
        accept.append(base_rate[g] * tpr[g][k] + (1 - base_rate[g]) * fpr[g][k])
        positives += weight * base_rate[g] * tpr[g][k]
        negatives += weight * (1 - base_rate[g]) * fpr[g][k]
    reward = (positives - cost * negatives + cost) / (1 + cost)
    return reward, abs(accept[0] - accept[1]) - eps, accept[0] - accept[1]


def reference_pair_steady(tpr, fpr, base_rate, k_a, k_b, p0, kappa, cost, eps):
    """reference_pair_outcome at the pair's steady share p* = sigmoid(logit(p0) + kappa gap)."""
    _, _, gap = reference_pair_outcome(tpr, fpr, base_rate, k_a, k_b, p0, cost, eps)
    share = 1.0 / (1.0 + math.exp(-(math.log(p0 / (1 - p0)) + kappa * gap)))
    reward, residual, _ = reference_pair_outcome(tpr, fpr, base_rate, k_a, k_b, share, cost, eps)
    return reward, residual, share
