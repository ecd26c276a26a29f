"""Grid confidence bounds and Optimistic Feasible Search (OFS) for fair threshold decisions.

B independent learners each pick one threshold per round from a K-point grid; after the round
they observe the reward and M constraint residuals (feasible iff <= 0) of the chosen threshold,
averaged over ``weight`` individuals.  Counts are in individuals, not rounds.

* :class:`GridBounds` is the batched state (counts, sums, sums of squares, running means) with
  ``update`` (one observation per learner) and ``select`` (bounds + selection rule, one pass).
* :class:`OFS`, :class:`UCB`, :class:`PrimalDual` and :class:`FixedThreshold` are the policies
  on top of it, with one interface: ``arms = policy.select()``; ``policy.update(arms, rewards,
  residuals, weight=n)``.
* :func:`run_episodes` runs whole closed-loop episodes of many learners inside the compiled
  core for any environment reduced to an :class:`EnvTable`.

The state lives in the library and device of ``like`` (numpy by default; a torch tensor or CuPy
array puts it there): numpy and CPU torch run on the C++ kernels (cpp/bandits.cc), CUDA torch
and CuPy on the CUDA kernels (cuda/bandits.cu) on the caller's current stream.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _arrays
from ._arrays import ArrayView
from ._backend import cuda_call_arguments, kernels_for

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

BOUNDS = ("ucb1", "hoeffding", "bernstein")
RULES = ("ofs", "ucb", "primal_dual", "fixed")
_BOUND_CODES = {name: i for i, name in enumerate(BOUNDS)}
_RULE_CODES = {name: i for i, name in enumerate(RULES)}
_OBSERVATION_ERRORS = {
    1: "arms: chosen arm out of range [0, K)",
    2: "rewards: must be finite and in [0, 1]",
    3: "residuals: must be finite and in [-1, 1]",
    4: "weight: must be finite and > 0",
}


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _real(value: Any, name: str, low: float | None = None, high: float | None = None, *, open_low: bool = False,
          open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value)
    if low is not None:
        ok &= value > low if open_low else value >= low
    if high is not None:
        ok &= value < high if open_high else value <= high
    if not ok:
        lo = "" if low is None else ("(" if open_low else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if open_high else "]")
        raise ValueError(f"{name} must be finite" + (f" and in {lo or '(-inf, '}{hi or 'inf)'}" if lo or hi else "")
                         + f", got {value}")
    return value


def make_grid(grid: Union[int, Sequence[float], np.ndarray]) -> np.ndarray:
    """The threshold grid: an int K gives ``tau_k = k / (K - 1)`` (K = 1 gives [0]); an array is
    copied as float64 and must be 1-D, finite and non-empty."""
    if isinstance(grid, numbers.Integral) and not isinstance(grid, bool):
        k = _int(grid, "grid", 1)
        return np.linspace(0.0, 1.0, k) if k > 1 else np.zeros(1)
    values = np.array(grid, dtype=np.float64, copy=True)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"grid must be an int or a non-empty 1-D array of finite thresholds, got shape {values.shape}")
    return values


def _zeros(like: Optional[ArrayView], shape: Sequence[int], dtype: str, name: str) -> ArrayView:
    if like is None:
        return _arrays.view(np.zeros(tuple(shape), dtype=dtype), name)
    v = _arrays.empty(like, shape, dtype, name)
    if v.library == "torch":
        v.array.zero_()
    else:
        v.array.fill(0)
    return v


def _full(like: Optional[ArrayView], shape: Sequence[int], value: float, name: str) -> ArrayView:
    v = _zeros(like, shape, "float64", name)
    if v.library == "torch":
        v.array.fill_(value)
    else:
        v.array.fill(value)
    return v


def _like_view(like: Any) -> Optional[ArrayView]:
    return None if like is None else _arrays.view(like, "like")


def _to_numpy(x: Array) -> np.ndarray:
    v = _arrays.view(x, "array")
    if v.library == "numpy":
        return x
    if v.library == "torch":
        return x.detach().cpu().numpy()
    return x.get()


class GridBounds:
    """Batched confidence-bound state of ``n_learners`` learners over a threshold grid.

    Args:
        n_learners: B, independent learners updated and queried together.
        grid: K (thresholds ``k / (K - 1)``) or an explicit 1-D array of thresholds.
        n_constraints: M residuals per observation (0 allowed).
        bound: "ucb1" (default), "hoeffding" or "bernstein" (empirical Bernstein).
        alpha: exploration constant of ucb1, ``rad = scale * sqrt(alpha * log(max(t, 2)) / w)``.
        delta: confidence of hoeffding / bernstein, ``L = log(2 K T / delta)``.
        horizon: T of hoeffding / bernstein, in individuals; None: anytime (individuals seen).
        like: an array whose library and device hold the state (numpy when None).

    ``scale`` is 1 for the reward and 2 for a residual; ``w`` and ``t`` count individuals.
    """

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, n_constraints: int = 1,
                 *, bound: str = "ucb1", alpha: float = 2.0, delta: float = 0.05, horizon: Optional[float] = None,
                 like: Any = None) -> None:
        self.n_learners = _int(n_learners, "n_learners", 1)
        self.grid = make_grid(grid)
        self.n_constraints = _int(n_constraints, "n_constraints", 0)
        self.bound = _choice(bound, "bound", BOUNDS)
        self.alpha = _real(alpha, "alpha", 0.0, open_low=True)
        self.delta = _real(delta, "delta", 0.0, 1.0, open_low=True, open_high=True)
        self.horizon = 0.0 if horizon is None else _real(horizon, "horizon", 0.0, open_low=True)
        self._like = _like_view(like)
        B, K, V = self.n_learners, self.n_arms, 1 + self.n_constraints
        self._state = {
            "count": _zeros(self._like, (B, K), "float64", "count"),
            "rounds": _zeros(self._like, (B, K), "float64", "rounds"),
            "total": _zeros(self._like, (B,), "float64", "total"),
            "sum": _zeros(self._like, (B, V, K), "float64", "sum"),
            "sumsq": _zeros(self._like, (B, V, K), "float64", "sumsq"),
            "mean": _zeros(self._like, (B, V, K), "float64", "mean"),
            "inv_sqrt": _full(self._like, (B, K), math.inf, "inv_sqrt"),  # +inf while untried
        }
        self._anchor = self._state["count"]
        self._kernels = kernels_for(self._anchor)
        self._status = _zeros(self._like, (2,), "int64", "status") if self._anchor.on_cuda else None

    # -- state ------------------------------------------------------------------------------
    @property
    def n_arms(self) -> int:
        """K, the number of grid thresholds."""
        return int(self.grid.shape[0])

    @property
    def counts(self) -> Array:
        """``[B, K]`` individuals seen on each arm (the live state: do not modify)."""
        return self._state["count"].array

    @property
    def means(self) -> Array:
        """``[B, 1 + M, K]`` running means: reward first, then the residuals (0 while untried)."""
        return self._state["mean"].array

    @property
    def total(self) -> Array:
        """``[B]`` individuals seen by each learner."""
        return self._state["total"].array

    def _base_args(self) -> dict[str, Any]:
        args = {name: v.address for name, v in self._state.items()}
        args.update(n_learners=self.n_learners, n_arms=self.n_arms, n_constraints=self.n_constraints,
                    bound=_BOUND_CODES[self.bound], alpha=self.alpha, delta=self.delta, horizon=self.horizon)
        args.update(cuda_call_arguments(self._anchor))
        return args

    def _input(self, x: Any, name: str, shape: tuple[int, ...], kind: str) -> ArrayView:
        v = _arrays.view(x, name)
        _arrays.same_place(self._anchor, v)
        if v.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {v.shape}")
        if kind == "int":
            if not v.dtype.startswith(("int", "uint")):
                raise TypeError(f"{name} must have an integer dtype, got {v.dtype}")
            return _arrays.astype(v, "int64")
        if v.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise TypeError(f"{name} must have a float dtype, got {v.dtype}")
        return _arrays.astype(v, "float64")

    # -- kernels ----------------------------------------------------------------------------
    def update(self, arms: Array, rewards: Array, residuals: Optional[Array] = None,
               weight: Union[float, Array] = 1.0, *, _lambdas: Optional[ArrayView] = None,
               _eta: Optional[ArrayView] = None) -> None:
        """Adds one observation per learner.

        Args:
            arms: ``[B]`` integer arm each learner played.
            rewards: ``[B]`` rewards in [0, 1] (per-individual mean).
            residuals: ``[B, M]`` constraint residuals in [-1, 1] (None when M = 0).
            weight: individuals each observation averages over: a number or a ``[B]`` array.

        Raises ValueError (state unchanged) for an arm outside [0, K), NaN or out-of-range
        values, or a weight that is not finite and positive or that would make a learner's
        total count (a float64 sum of weights: exact integers below 2**53) overflow.  Inputs are never modified
        (non-float64 / non-contiguous inputs are converted into a copy).
        """
        B, M = self.n_learners, self.n_constraints
        a = self._input(arms, "arms", (B,), "int")
        r = self._input(rewards, "rewards", (B,), "float")
        h = None
        if residuals is not None:
            h = self._input(residuals, "residuals", (B, M), "float")
        elif M > 0:
            raise ValueError(f"residuals are required: this state has n_constraints={M}")
        weights = None
        scalar_weight = 1.0
        if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
            scalar_weight = _real(weight, "weight", 0.0, open_low=True)
        else:
            weights = self._input(weight, "weight", (B,), "float")
        args = self._base_args()
        args.update(arms=a.address, rewards=r.address, residuals=h.address if h is not None and M else 0,
                    weights=weights.address if weights is not None else 0, weight=scalar_weight,
                    lambdas=_lambdas.address if _lambdas is not None else 0,
                    eta=_eta.address if _eta is not None else 0,
                    status=self._status.address if self._status is not None else 0)
        self._kernels.bandit_update(args)
        if self._status is not None:
            status = _to_numpy(self._status.array)  # one small device-to-host copy (synchronises)
            if status[0] != 0:
                raise ValueError(f"{_OBSERVATION_ERRORS[int(status[0])]} (learner {int(status[1])})")

    def select(self, rule: str = "ofs", lambdas: Optional[Array] = None) -> Array:
        """Computes the bounds and applies ``rule`` ("ofs", "ucb" or "primal_dual") in one pass.

        Returns ``[B]`` int64 arms in the state's library and device.  ``lambdas`` (``[B, M]``
        float64, primal_dual only) are the multipliers.  Untried arms come first, ties go to
        the lowest index.
        """
        arms, _, _ = self._select(rule, lambdas, want_bounds=False)
        return arms

    def bounds(self) -> tuple[Array, Array]:
        """``(ucb [B, K], lcb [B, M, K])``: optimistic reward and optimistic residuals."""
        _, ucb, lcb = self._select("ofs", None, want_bounds=True)
        return ucb, lcb

    def _select(self, rule: str, lambdas: Optional[Array], want_bounds: bool):
        _choice(rule, "rule", RULES[:3])
        B, K, M = self.n_learners, self.n_arms, self.n_constraints
        lam = None
        if rule == "primal_dual" and M > 0:
            if lambdas is None:
                raise ValueError("rule 'primal_dual' needs lambdas [B, M]")
            lam = self._input(lambdas, "lambdas", (B, M), "float")
        arms = _arrays.empty(self._anchor, (B,), "int64", "arms")
        ucb = _arrays.empty(self._anchor, (B, K), "float64", "ucb") if want_bounds else None
        lcb = _arrays.empty(self._anchor, (B, M, K), "float64", "lcb") if want_bounds else None
        args = self._base_args()
        args.update(rule=_RULE_CODES[rule], lambdas=lam.address if lam is not None else 0, arms=arms.address,
                    ucb=ucb.address if ucb is not None else 0, lcb=lcb.address if lcb is not None else 0)
        self._kernels.bandit_select(args)
        return arms.array, (ucb.array if ucb is not None else None), (lcb.array if lcb is not None else None)


class _Policy:
    """Shared interface: ``select() -> arms [B]``, ``update(arms, rewards, residuals, weight)``."""

    rule = "ofs"

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, n_constraints: int = 1,
                 *, bound: str = "ucb1", alpha: float = 2.0, delta: float = 0.05, horizon: Optional[float] = None,
                 like: Any = None) -> None:
        self.state = GridBounds(n_learners, grid, n_constraints, bound=bound, alpha=alpha, delta=delta,
                                horizon=horizon, like=like)

    @property
    def grid(self) -> np.ndarray:
        """``[K]`` thresholds (numpy); ``policy.grid[arms]`` are the chosen thresholds."""
        return self.state.grid

    @property
    def n_learners(self) -> int:
        return self.state.n_learners

    def select(self) -> Array:
        """``[B]`` int64 arms, one per learner."""
        return self.state.select(self.rule)

    def update(self, arms: Array, rewards: Array, residuals: Optional[Array] = None,
               weight: Union[float, Array] = 1.0) -> None:
        """Feeds back the observation of the arms played (see :meth:`GridBounds.update`)."""
        self.state.update(arms, rewards, residuals, weight)


class OFS(_Policy):
    """Optimistic Feasible Search: among arms whose optimistic residuals (LCB) are all <= 0,
    the one with the highest optimistic reward (UCB); when none, the arm of least optimistic
    violation ``sum_j max(0, LCB_j)``.  Same arguments as :class:`GridBounds`."""

    rule = "ofs"


class UCB(_Policy):
    """Unconstrained UCB on the reward (ignores the residuals, which it still records)."""

    rule = "ucb"


class PrimalDual(_Policy):
    """Lagrangian baseline: ``argmax_k UCB_r[k] - sum_j lambda_j mean_h[k, j]``, then
    ``lambda_j <- max(0, lambda_j + eta * h_j)`` after each observation.

    Args (besides those of :class:`GridBounds`):
        eta: step size; None gives ``1 / sqrt(n_rounds)``.
        n_rounds: horizon in rounds, needed when ``eta`` is None.
    """

    rule = "primal_dual"

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, n_constraints: int = 1,
                 *, eta: Optional[float] = None, n_rounds: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(n_learners, grid, n_constraints, **kwargs)
        if eta is None:
            if n_rounds is None:
                raise ValueError("give eta or n_rounds (eta defaults to 1/sqrt(n_rounds))")
            eta = 1.0 / math.sqrt(_int(n_rounds, "n_rounds", 1))
        self.eta = _real(eta, "eta", 0.0)
        like = self.state._like
        self._lambdas = _zeros(like, (n_learners, n_constraints), "float64", "lambdas")
        self._eta = _full(like, (n_learners,), self.eta, "eta")

    @property
    def lambdas(self) -> Array:
        """``[B, M]`` current multipliers."""
        return self._lambdas.array

    def select(self) -> Array:
        return self.state.select("primal_dual", self._lambdas.array)

    def update(self, arms: Array, rewards: Array, residuals: Optional[Array] = None,
               weight: Union[float, Array] = 1.0) -> None:
        self.state.update(arms, rewards, residuals, weight, _lambdas=self._lambdas, _eta=self._eta)


class FixedThreshold:
    """Always plays one arm (given by index ``arm`` or the grid point nearest ``threshold``)."""

    rule = "fixed"

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, *,
                 arm: Optional[int] = None, threshold: Optional[float] = None, like: Any = None) -> None:
        self.n_learners = _int(n_learners, "n_learners", 1)
        self.grid = make_grid(grid)
        if (arm is None) == (threshold is None):
            raise ValueError("give exactly one of arm and threshold")
        if arm is None:
            arm = int(np.argmin(np.abs(self.grid - _real(threshold, "threshold"))))
        self.arm = _int(arm, "arm", 0)
        if self.arm >= self.grid.shape[0]:
            raise ValueError(f"arm must be < K = {self.grid.shape[0]}, got {arm}")
        self._like = _like_view(like)

    def select(self) -> Array:
        arms = _zeros(self._like, (self.n_learners,), "int64", "arms")
        if arms.library == "torch":
            arms.array.fill_(self.arm)
        else:
            arms.array.fill(self.arm)
        return arms.array

    def update(self, arms: Array, rewards: Array, residuals: Optional[Array] = None,
               weight: Union[float, Array] = 1.0) -> None:
        """Nothing to learn."""


# ---------------------------------------------------------------------------------------------
# Fused closed-loop episodes


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
        object.__setattr__(self, "p0", _real(self.p0, "p0", 0.0, 1.0, open_low=True, open_high=True))
        object.__setattr__(self, "beta", _real(self.beta, "beta", 0.0, 1.0))
        object.__setattr__(self, "kappa", _real(self.kappa, "kappa"))
        object.__setattr__(self, "cohort", _int(self.cohort, "cohort", 1))
        object.__setattr__(self, "cost", _real(self.cost, "cost", 0.0))
        object.__setattr__(self, "eps", _real(self.eps, "eps", 0.0, 1.0))
        if self.rho_min is not None:
            object.__setattr__(self, "rho_min", _real(self.rho_min, "rho_min", 0.0, 1.0))

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

    def expected(self, share: Optional[float] = None) -> dict[str, np.ndarray]:
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


def run_episodes(env: EnvTable, rules: Sequence[str], *, n_rounds: int, seed: int = 0,
                 stream_ids: Optional[Sequence[int]] = None, fixed_arms: Optional[Sequence[int]] = None,
                 eta: Union[float, Sequence[float], None] = None, bound: str = "ucb1", alpha: float = 2.0,
                 delta: float = 0.05, horizon: Optional[float] = None, n_buckets: Optional[int] = None,
                 device: str = "cpu") -> EpisodeTraces:
    """Runs one closed-loop episode per learner inside the compiled core.

    Args:
        env: the environment table.
        rules: one rule per learner ("ofs", "ucb", "primal_dual" or "fixed"); B = len(rules).
        n_rounds: T.
        seed: with ``stream_ids``, keys the counter-based (Philox4x32-10) random streams.
        stream_ids: ``[B]`` stream of each learner (default ``0..B-1``).  A learner's draws
            depend only on (seed, its stream id, round), never on the other learners.
        fixed_arms: ``[B]`` arm of each "fixed" learner (ignored for the others).
        eta: primal-dual step size(s), a number or ``[B]``; default ``1/sqrt(T)``.
        bound, alpha, delta: as in :class:`GridBounds`; ``horizon`` defaults to ``T * n``.
        n_buckets: rounds are summed into this many consecutive buckets (<= T; default
            min(100, T)).
        device: "cpu" or "cuda" (needs the CUDA module and torch or CuPy).  Both run the same
            operations in the same order (cpp/bandits_core.h; no FMA contraction on the device),
            so they give the same trajectories from the same seed, except where CUDA's and the C
            library's exp/log differ by one ulp exactly at an accept/reject or threshold boundary
            of a draw (possible in principle, not expected in practice; the CUDA test checks it).

    Returns:
        :class:`EpisodeTraces` (numpy), whatever the device.
    """
    if not isinstance(env, EnvTable):
        raise TypeError(f"env must be an EnvTable, got {type(env).__name__}")
    T = _int(n_rounds, "n_rounds", 1)
    NB = min(100, T) if n_buckets is None else _int(n_buckets, "n_buckets", 1)
    if NB > T:
        raise ValueError(f"n_buckets must be <= n_rounds ({T}), got {NB}")
    rules = list(rules)
    B = len(rules)
    if B == 0:
        raise ValueError("rules must name at least one learner")
    codes = np.array([_RULE_CODES[_choice(r, "rules", RULES)] for r in rules], dtype=np.int64)
    K, M = env.n_arms, env.n_constraints
    ids = np.arange(B, dtype=np.int64) if stream_ids is None else np.array(stream_ids, dtype=np.int64)
    if ids.shape != (B,) or np.any(ids < 0):
        raise ValueError(f"stream_ids must be {B} non-negative integers")
    arms = np.zeros(B, dtype=np.int64) if fixed_arms is None else np.array(fixed_arms, dtype=np.int64)
    if arms.shape != (B,):
        raise ValueError(f"fixed_arms must have {B} entries, got shape {arms.shape}")
    fixed = codes == _RULE_CODES["fixed"]
    if np.any(fixed & ((arms < 0) | (arms >= K))):
        raise ValueError(f"fixed_arms: arm out of range [0, {K})")
    if fixed_arms is None and np.any(fixed):
        raise ValueError("fixed_arms is required for 'fixed' learners")
    etas = np.full(B, 1.0 / math.sqrt(T)) if eta is None else np.broadcast_to(np.asarray(eta, dtype=np.float64), (B,))
    if not np.all(np.isfinite(etas) & (etas >= 0)):
        raise ValueError("eta must be finite and >= 0")
    seed = _int(seed, "seed", 0)
    if seed >= 2**64:
        raise ValueError("seed must be < 2**64")
    _choice(bound, "bound", BOUNDS)
    device = _choice(device, "device", ("cpu", "cuda"))
    host = {"stream_ids": ids, "rules": codes, "fixed_arms": arms, "eta": np.ascontiguousarray(etas),
            "accept": env.accept_rate, "precision": env.precision}
    shapes = {"reward_trace": (B, NB), "violation_trace": (B, NB), "residual_trace": (B, NB, M), "pulls": (B, K),
              "final_share": (B,)}
    if device == "cpu":
        inputs = {k: _arrays.view(v, k) for k, v in host.items()}
        outputs = {k: _arrays.view(np.zeros(s), k) for k, s in shapes.items()}
        kernels = kernels_for(outputs["pulls"])
        extra: dict[str, Any] = {}
    else:
        inputs, outputs, kernels, extra = _cuda_episode_buffers(host, shapes)
    args = {k: v.address for k, v in {**inputs, **outputs}.items()}
    args.update(n_learners=B, n_rounds=T, n_buckets=NB, seed=seed, bound=_BOUND_CODES[bound],
                alpha=_real(alpha, "alpha", 0.0, open_low=True),
                delta=_real(delta, "delta", 0.0, 1.0, open_low=True, open_high=True),
                horizon=0.0 if horizon is None else _real(horizon, "horizon", 0.0, open_low=True),
                n_arms=K, p0=env.p0,
                beta=env.beta, kappa=env.kappa, cohort=env.cohort, cost=env.cost, eps=env.eps,
                service=env.rho_min is not None, rho_min=0.0 if env.rho_min is None else env.rho_min, **extra)
    kernels.bandit_episode(args)
    out = {k: _to_numpy(v.array) for k, v in outputs.items()}
    edges = (np.arange(T) * NB) // T
    return EpisodeTraces(out["reward_trace"], out["violation_trace"], out["residual_trace"], out["pulls"],
                         out["final_share"], np.bincount(edges, minlength=NB).astype(np.int64))


def _cuda_episode_buffers(host: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]):
    """Device copies of the inputs and zeroed outputs, in torch when importable, else CuPy."""
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError
        make = lambda a: torch.as_tensor(a, device="cuda")  # noqa: E731
        zeros = lambda s: torch.zeros(s, dtype=torch.float64, device="cuda")  # noqa: E731
    except ImportError:
        try:
            import cupy
        except ImportError as error:
            raise RuntimeError("device='cuda' needs torch with CUDA or CuPy") from error
        make = cupy.asarray
        zeros = lambda s: cupy.zeros(s, dtype=cupy.float64)  # noqa: E731
    inputs = {k: _arrays.view(make(np.ascontiguousarray(v)), k) for k, v in host.items()}
    outputs = {k: _arrays.view(zeros(s), k) for k, s in shapes.items()}
    anchor = outputs["pulls"]
    return inputs, outputs, kernels_for(anchor), cuda_call_arguments(anchor)
