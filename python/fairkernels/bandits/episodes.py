"""Fused closed-loop episodes: an environment reduced to a table, run inside the compiled core.

:class:`EnvTable` is any closed-loop environment of :mod:`fairkernels.envs` reduced to per-arm
acceptance rates and precisions; :func:`run_episodes` runs one whole episode per learner in one
kernel call (cpp/bandits.cc, cuda/bandits.cu), with counter-based random streams so that CPU and
CUDA give the same trajectories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from .. import _arrays, _core
from .._backend import launch
from .._options import boolean, enum_value, integer, real
from .policies import bound_options, make_grid


@dataclass(frozen=True)
class EnvTable:
    """A closed-loop environment reduced to one table (see fairkernels.envs).

    Per group g (row 0 = a, row 1 = b) and grid point k: ``tpr[g, k] = P(s >= tau_k | y=1, g)``,
    ``fpr[g, k] = P(s >= tau_k | y=0, g)``; ``base_rate[g] = P(y=1 | g)``.  Each round: n
    individuals, ``N_a ~ Binomial(n, p_t)``, per group accepted ``~ Binomial(N_g, P(s >= tau | g))``
    and true positives ``~ Binomial(accepted, P(y=1 | s >= tau, g))`` (the joint law of drawing
    the n individuals, in five draws); reward ``(TP - c FP + c n) / ((1 + c) n)`` in [0, 1]; residuals
    ``|A_a - A_b| - eps`` and, with ``rho_min``, ``rho_min - A``; then
    ``p_{t+1} = (1 - beta) p_t + beta sigmoid(logit(p0) + kappa (A_a - A_b))``.
    """

    grid: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    base_rate: np.ndarray
    p0: float = 0.5
    beta: float = 0.05
    kappa: float = 4.0
    cohort: int = 2000
    cost: float = 1.0
    eps: float = 0.1
    rho_min: Optional[float] = None
    name: str = field(default="env", compare=False)

    def __post_init__(self) -> None:
        grid = make_grid(self.grid)
        K = grid.shape[0]
        for name in ("tpr", "fpr"):
            value = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if value.shape != (2, K) or not np.all((value >= 0) & (value <= 1)):
                raise ValueError(f"{name} must be [2, K={K}] with values in [0, 1], got shape {value.shape}")
            object.__setattr__(self, name, value)
        base = np.ascontiguousarray(self.base_rate, dtype=np.float64)
        if base.shape != (2,) or not np.all((base >= 0) & (base <= 1)):
            raise ValueError("base_rate must be 2 values in [0, 1]")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "base_rate", base)
        object.__setattr__(self, "p0", real(self.p0, "p0", 0.0, 1.0, open_low=True, open_high=True))
        object.__setattr__(self, "beta", real(self.beta, "beta", 0.0, 1.0))
        object.__setattr__(self, "kappa", real(self.kappa, "kappa"))
        object.__setattr__(self, "cohort", integer(self.cohort, "cohort", 1))
        object.__setattr__(self, "cost", real(self.cost, "cost", 0.0))
        object.__setattr__(self, "eps", real(self.eps, "eps", 0.0, 1.0))
        if self.rho_min is not None:
            object.__setattr__(self, "rho_min", real(self.rho_min, "rho_min", 0.0, 1.0))

    @property
    def n_arms(self) -> int:
        return int(self.grid.shape[0])

    @property
    def accept_rate(self) -> np.ndarray:
        """``[2, K]`` P(s >= tau_k | g)."""
        return np.ascontiguousarray(self.base_rate[:, None] * self.tpr + (1 - self.base_rate[:, None]) * self.fpr)

    @property
    def precision(self) -> np.ndarray:
        """``[2, K]`` P(y = 1 | s >= tau_k, g), 0 where nobody is accepted."""
        accepted_pos = self.base_rate[:, None] * self.tpr
        accept = self.accept_rate
        safe = np.where(accept > 0, accept, 1.0)
        return np.ascontiguousarray(np.clip(np.where(accept > 0, accepted_pos / safe, 0.0), 0.0, 1.0))

    @property
    def n_constraints(self) -> int:
        return 1 if self.rho_min is None else 2

    def expected(self, share: Union[float, np.ndarray, None] = None) -> dict[str, np.ndarray]:
        """Expected acceptance rates, reward and residuals of every arm at group-a share
        ``share`` (default p0): ``{"accept_a", "accept_b", "reward", "residual" [M, K]}``."""
        p = self.p0 if share is None else share
        acc = self.base_rate[:, None] * self.tpr + (1 - self.base_rate[:, None]) * self.fpr
        pos = p * self.base_rate[0] * self.tpr[0] + (1 - p) * self.base_rate[1] * self.tpr[1]
        neg = p * (1 - self.base_rate[0]) * self.fpr[0] + (1 - p) * (1 - self.base_rate[1]) * self.fpr[1]
        reward = (pos - self.cost * neg + self.cost) / (1 + self.cost)
        residual = [np.abs(acc[0] - acc[1]) - self.eps]
        if self.rho_min is not None:
            residual.append(self.rho_min - (pos + neg))
        return {"accept_a": acc[0], "accept_b": acc[1], "reward": reward, "residual": np.array(residual)}

    def steady_share(self) -> np.ndarray:
        """``[K]`` fixed point of the expected share dynamics under each fixed threshold:
        ``p* = sigmoid(logit(p0) + kappa (A_a - A_b))`` (the map is a contraction with factor
        ``1 - beta``, since the groups' acceptance rates do not depend on the share)."""
        e = self.expected()
        z = math.log(self.p0 / (1 - self.p0)) + self.kappa * (e["accept_a"] - e["accept_b"])
        return 1.0 / (1.0 + np.exp(-z))

    def expected_steady(self) -> dict[str, np.ndarray]:
        """:meth:`expected` of every arm at its own steady share."""
        return self.expected(self.steady_share())


@dataclass
class EpisodeTraces:
    """What :func:`run_episodes` returns (numpy arrays)."""

    reward: np.ndarray      # [B, NB] sum of the rewards of the rounds in each bucket
    violation: np.ndarray   # [B, NB] sum over those rounds of sum_j max(0, h_j)
    residual: np.ndarray    # [B, NB, M] sum of the residuals
    pulls: np.ndarray       # [B, K] rounds spent on each arm
    final_share: np.ndarray  # [B] group-a share after the last round
    bucket_rounds: np.ndarray  # [NB] rounds in each bucket


def _configuration(values: Union[Sequence[Any], np.ndarray, None], name: str, dtype: Any, count: int,
                   default: np.ndarray) -> np.ndarray:
    """A per-learner configuration sequence (lists accepted) as a numpy array of ``count``."""
    if values is None:
        return default
    try:
        array = np.array(_arrays.host_values(values, name), dtype=dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"{name} must be a sequence of {np.dtype(dtype).name} values ({error})") from None
    if array.shape != (count,):
        raise ValueError(f"{name} must have {count} entries (one per learner), got shape {array.shape}")
    return array


def pair_columns(n_thresholds: int) -> np.ndarray:
    """``[2, C^2]`` the table column of each product-grid arm for group a (row 0) and group b
    (row 1): arm ``k = k_a * C + k_b`` accepts group a at column ``k_a`` and b at ``k_b``."""
    a, b = np.divmod(np.arange(n_thresholds * n_thresholds, dtype=np.int64), n_thresholds)
    return np.ascontiguousarray(np.stack([a, b]))


def pair_arms(n_thresholds: int, arm_a: Any, arm_b: Any) -> np.ndarray:
    """The product-grid arm(s) ``k_a * C + k_b`` of per-group grid indices (numpy int64)."""
    a, b = np.asarray(arm_a, dtype=np.int64), np.asarray(arm_b, dtype=np.int64)
    if np.any((a < 0) | (a >= n_thresholds) | (b < 0) | (b >= n_thresholds)):
        raise ValueError(f"pair_arms: grid index out of range [0, {n_thresholds})")
    return a * n_thresholds + b


def kernel_table(env: EnvTable, per_group: bool = False, place: Optional[_arrays.ArrayView] = None
                 ) -> tuple[Any, dict[str, _arrays.ArrayView]]:
    """The kernel's EnvTable struct (cpp/bandits.h) for env, and the arrays it points to (in
    place's library and device; keep them alive while the struct is used)."""
    C = env.n_arms
    table = _core.EnvTable()
    table.n_arms, table.n_columns, table.p0, table.beta, table.kappa = C * C if per_group else C, C, env.p0, \
        env.beta, env.kappa
    table.cohort, table.cost, table.eps = env.cohort, env.cost, env.eps
    table.service = env.rho_min is not None
    table.rho_min = 0.0 if env.rho_min is None else env.rho_min
    tables = {"accept": env.accept_rate, "precision": env.precision}
    if per_group:
        tables["columns"] = pair_columns(C)
    held = {name: _arrays.from_numpy(place, values, name) for name, values in tables.items()}
    table.accept, table.precision = held["accept"].address, held["precision"].address
    table.columns = held["columns"].address if per_group else 0
    return table, held


def run_episodes(env: EnvTable, rules: Sequence[str], *, n_rounds: int, seed: int = 0,
                 stream_ids: Optional[Sequence[int]] = None, fixed_arms: Optional[Sequence[int]] = None,
                 eta: Union[float, Sequence[float], None] = None, bound: str = "ucb1", alpha: float = 2.0,
                 delta: float = 0.05, horizon: Optional[float] = None, n_buckets: Optional[int] = None,
                 like: Any = None, per_group: bool = False) -> EpisodeTraces:
    """Runs one closed-loop episode per learner inside the compiled core.

    Args:
        env: the environment table.
        rules: one rule per learner ("ofs", "ucb", "primal_dual" or "fixed"); B = len(rules).
        n_rounds: T.
        seed: with ``stream_ids``, keys the counter-based (Philox4x32-10) random streams.
        stream_ids: ``[B]`` stream of each learner (default ``0..B-1``).  A learner's draws
            depend only on (seed, its stream id, round), never on the other learners.
        fixed_arms: ``[B]`` arm of each "fixed" learner (ignored for the others); with
            ``per_group`` an arm of the product grid (see :func:`pair_arms`).
        eta: primal-dual step size(s), a number or ``[B]``; default ``1/sqrt(T)``.
        bound, alpha, delta: as in :class:`GridBounds`; ``horizon`` defaults to ``T * n``.
        n_buckets: rounds are summed into this many consecutive buckets (<= T; default
            min(100, T)).
        like: an array whose library and device run the episodes, as everywhere in
            :mod:`fairkernels.bandits` (numpy on the CPU when None; a CUDA torch tensor or
            CuPy array runs them on that GPU).  Both run the same operations in the same order
            (cpp/bandits_core.h; no FMA contraction on the device), so they give the same
            trajectories from the same seed, except where CUDA's and the C library's exp/log
            differ by one ulp exactly at an accept/reject or threshold boundary of a draw
            (possible in principle, not expected in practice; the CUDA test checks it).
        per_group: one threshold per group: the arms are every pair ``(tau_a, tau_b)`` of the
            table's grid, ``k = k_a * C + k_b`` for a C-point grid (K = C^2 arms, the grid of
            ``make_grid(env.grid, per_group=True)``); reward, residuals, counts and the rules
            are unchanged.  Arm ``k_a * C + k_a`` plays exactly as the shared threshold
            ``k_a`` (same draws from the same stream).

    ``rules``, ``stream_ids``, ``fixed_arms`` and ``eta`` are configuration: sequences (lists)
    are accepted and copied.

    Returns:
        :class:`EpisodeTraces` (numpy arrays, wherever the episodes ran).
    """
    if not isinstance(env, EnvTable):
        raise TypeError(f"env must be an EnvTable, got {type(env).__name__}")
    T = integer(n_rounds, "n_rounds", 1)
    NB = min(100, T) if n_buckets is None else integer(n_buckets, "n_buckets", 1)
    if NB > T:
        raise ValueError(f"n_buckets must be <= n_rounds ({T}), got {NB}")
    if isinstance(rules, str):
        raise TypeError("rules must be a sequence of rule names (one per learner), not one string")
    rules = list(rules)
    B = len(rules)
    if B == 0:
        raise ValueError("rules must name at least one learner")
    codes = np.array([int(enum_value(_core.SelectRule, r, "rules")) for r in rules], dtype=np.int64)
    C, M = env.n_arms, env.n_constraints
    K = C * C if boolean(per_group, "per_group") else C
    ids = _configuration(stream_ids, "stream_ids", np.int64, B, np.arange(B, dtype=np.int64))
    if np.any(ids < 0):
        raise ValueError("stream_ids must be non-negative")
    arms = _configuration(fixed_arms, "fixed_arms", np.int64, B, np.zeros(B, dtype=np.int64))
    fixed = codes == int(_core.SelectRule.fixed)
    if np.any(fixed & ((arms < 0) | (arms >= K))):
        raise ValueError(f"fixed_arms: arm out of range [0, {K})")
    if fixed_arms is None and np.any(fixed):
        raise ValueError("fixed_arms is required for 'fixed' learners")
    if eta is None or np.ndim(eta) == 0:
        step = 1.0 / math.sqrt(T) if eta is None else real(eta, "eta", 0.0)
        etas = np.full(B, step)
    else:
        etas = _configuration(eta, "eta", np.float64, B, np.empty(0))  # type: ignore[arg-type]  # not a number
        if not np.all(np.isfinite(etas) & (etas >= 0)):
            raise ValueError("eta must be finite and >= 0")
    seed = integer(seed, "seed", 0, 2**64 - 1)
    place = None if like is None else _arrays.view(like, "like")
    table, held = kernel_table(env, per_group, place)
    args = _core.EpisodeArgs()
    args.n_learners, args.n_rounds, args.n_buckets, args.seed = B, T, NB, seed
    args.bound = bound_options(bound, alpha, delta, horizon)
    inputs = {"stream_ids": ids, "rules": codes, "fixed_arms": arms, "eta": etas}
    held.update({name: _arrays.from_numpy(place, values, name) for name, values in inputs.items()})
    for name in inputs:
        setattr(args, name, held[name].address)
    shapes = {"reward_trace": (B, NB), "violation_trace": (B, NB), "residual_trace": (B, NB, M), "pulls": (B, K),
              "final_share": (B,)}
    outputs = {name: _arrays.zeros(place, shape, "float64", name) for name, shape in shapes.items()}
    for name, v in outputs.items():
        setattr(args, name, v.address)
    launch("bandit_episode", outputs["pulls"], table, args)
    out = {name: _arrays.to_numpy(v) for name, v in outputs.items()}
    edges = (np.arange(T) * NB) // T
    return EpisodeTraces(out["reward_trace"], out["violation_trace"], out["residual_trace"], out["pulls"],
                         out["final_share"], np.bincount(edges, minlength=NB).astype(np.int64))
