"""The batched confidence-bound state of B learners and the policies on top of it.

:class:`GridBounds` holds the state; :func:`update_state` and :func:`select_arms` are the two
kernel calls on it (one code path: the eager methods call them directly, and the torch custom
ops of :mod:`fairkernels._torch_ops` call the same functions, so that ``torch.compile`` traces
a policy whose state lives in torch).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .. import _arrays, _core
from .._arrays import ArrayView
from .._backend import launch
from .._options import boolean, choice, enum_value, integer, real

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

BOUNDS = tuple(_core.BoundKind.__members__)
RULES = tuple(_core.SelectRule.__members__)
STATE_FIELDS = ("count", "rounds", "total", "sum", "sumsq", "mean", "inv_sqrt")
_OBSERVATION_ERRORS = {
    1: "arms: chosen arm out of range [0, K)",
    2: "rewards: must be finite and in [0, 1]",
    3: "residuals: must be finite and in [-1, 1]",
    4: "weight: must be finite and > 0 (and must not make a learner's total count overflow)",
}
_FLOAT64 = {"float": "float64"}
_INT64 = {"int": "int64"}


def make_grid(grid: Union[int, Sequence[float], np.ndarray], per_group: bool = False) -> np.ndarray:
    """The threshold grid of the arms.

    Shared thresholds (one per arm, ``[K]``): an int K gives ``tau_k = k / (K - 1)`` (K = 1
    gives [0]); a sequence or array (configuration, so lists are accepted) is copied as
    float64 and must be 1-D, finite and non-empty.

    Per-group thresholds (a pair ``(tau_a, tau_b)`` per arm, ``[K, 2]``): a 2-D ``[K, 2]``
    grid is taken as it is (any set of pairs); with ``per_group=True`` an int or 1-D grid is
    used for both groups and the arms are its product (:func:`product_grid`).
    """
    per_group = boolean(per_group, "per_group")
    if isinstance(grid, numbers.Integral) and not isinstance(grid, bool):
        k = integer(grid, "grid", 1)
        values = np.linspace(0.0, 1.0, k) if k > 1 else np.zeros(1)
        return product_grid(values, values) if per_group else values
    values = np.array(_arrays.host_values(grid, "grid"), dtype=np.float64, copy=True)
    if values.ndim == 2 and values.shape[1] == 2 and values.shape[0] > 0 and np.all(np.isfinite(values)):
        return values
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("grid must be an int, a non-empty 1-D array of finite thresholds or a [K, 2] array of "
                         f"finite (tau_a, tau_b) pairs, got shape {values.shape}")
    return product_grid(values, values) if per_group else values


def product_grid(grid_a: Union[int, Sequence[float], np.ndarray],
                 grid_b: Union[int, Sequence[float], np.ndarray]) -> np.ndarray:
    """``[K_a * K_b, 2]`` every pair of a threshold of group a and one of group b, arm
    ``k = k_a * K_b + k_b`` (group a's index varies slowest); each grid as in :func:`make_grid`."""
    a, b = make_grid(grid_a), make_grid(grid_b)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("product_grid takes two 1-D grids (one per group)")
    return np.ascontiguousarray(np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2))


def bound_options(bound: str, alpha: float, delta: float, horizon: Optional[float]) -> Any:
    """The kernel's BoundOptions (cpp/bandits.h), validated."""
    o = _core.BoundOptions()
    o.kind = enum_value(_core.BoundKind, bound, "bound")
    o.alpha = real(alpha, "alpha", 0.0, open_low=True)
    o.delta = real(delta, "delta", 0.0, 1.0, open_low=True, open_high=True)
    o.horizon = 0.0 if horizon is None else real(horizon, "horizon", 0.0, open_low=True)
    return o


def state_struct(state: Mapping[str, ArrayView], n_constraints: int) -> Any:
    """The kernel's BanditState over the state arrays (their addresses never change)."""
    s = _core.BanditState()
    count = state["count"]
    s.n_learners, s.n_arms = count.shape
    s.n_constraints = n_constraints
    for name in STATE_FIELDS:
        setattr(s, name, state[name].address)
    return s


def update_state(state: Mapping[str, ArrayView], struct: Any, arms: Array, rewards: Array,
                 residuals: Optional[Array], weight: Union[float, Array], lambdas: Optional[ArrayView] = None,
                 eta: Optional[ArrayView] = None, status: Optional[ArrayView] = None) -> None:
    """Adds one observation per learner to the state (see :meth:`GridBounds.update`)."""
    anchor = state["count"]
    B, M = struct.n_learners, struct.n_constraints
    a = _arrays.take(arms, "arms", like=anchor, shape=(B,), dtypes=("int64",), convert=_INT64,
                     context=" (one per learner)")
    r = _arrays.take(rewards, "rewards", like=anchor, shape=(B,), dtypes=("float64",), convert=_FLOAT64,
                     context=" (one per learner)")
    h = None
    if residuals is not None:
        h = _arrays.take(residuals, "residuals", like=anchor, shape=(B, M), dtypes=("float64",), convert=_FLOAT64,
                         context=" ([learners, constraints])")
    elif M > 0:
        raise ValueError(f"residuals are required: this state has n_constraints={M}")
    u = _core.UpdateArgs()
    weights = None  # held until the kernel has run: u only holds its address
    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        u.weight = real(weight, "weight", 0.0, open_low=True)
    else:
        weights = _arrays.take(weight, "weight", like=anchor, shape=(B,), dtypes=("float64",), convert=_FLOAT64,
                               context=" (a number, or one per learner)")
        u.weights = weights.address
    u.arms, u.rewards = a.address, r.address
    u.residuals = h.address if h is not None and M else 0
    u.lambdas, u.eta, u.status = (_arrays.address_of(v) for v in (lambdas, eta, status))
    launch("bandit_update", anchor, struct, u)
    del a, r, h, weights  # the kernel has run: the inputs (and their copies) may go
    if status is not None:
        code, learner = (int(c) for c in _arrays.to_numpy(status))  # one small copy (synchronises)
        if code != 0:
            raise ValueError(f"{_OBSERVATION_ERRORS[code]} (learner {learner})")


def select_arms(state: Mapping[str, ArrayView], struct: Any, bound: Any, rule: str, lambdas: Optional[Array],
                want_bounds: bool) -> tuple[Array, Optional[Array], Optional[Array]]:
    """(arms [B], ucb [B, K] or None, lcb [B, M, K] or None) (see :meth:`GridBounds.select`)."""
    anchor = state["count"]
    B, K, M = struct.n_learners, struct.n_arms, struct.n_constraints
    s = _core.SelectArgs()
    s.rule = enum_value(_core.SelectRule, rule, "rule")
    if rule == "fixed":
        raise ValueError("rule 'fixed' has no bounds to select from: use FixedThreshold")
    s.bound = bound
    lam = None  # held until the kernel has run: s only holds its address
    if rule == "primal_dual" and M > 0:
        if lambdas is None:
            raise ValueError("rule 'primal_dual' needs lambdas [B, M]")
        lam = _arrays.take(lambdas, "lambdas", like=anchor, shape=(B, M), dtypes=("float64",), convert=_FLOAT64,
                           context=" ([learners, constraints])")
        s.lambdas = lam.address
    arms = _arrays.fresh(anchor, (B,), "int64", "arms")
    ucb = _arrays.fresh(anchor, (B, K), "float64", "ucb") if want_bounds else None
    lcb = _arrays.fresh(anchor, (B, M, K), "float64", "lcb") if want_bounds else None
    s.arms = arms.address
    s.ucb, s.lcb = _arrays.address_of(ucb), _arrays.address_of(lcb)
    launch("bandit_select", anchor, struct, s)
    del lam
    return arms.array, (ucb.array if ucb is not None else None), (lcb.array if lcb is not None else None)


def _like_view(like: Any) -> Optional[ArrayView]:
    return None if like is None else _arrays.view(like, "like")


def _compiling(state: Mapping[str, ArrayView]) -> bool:
    if state["count"].library != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()


class GridBounds:
    """Batched confidence-bound state of ``n_learners`` learners over a threshold grid.

    Args:
        n_learners: B, independent learners updated and queried together.
        grid: K (thresholds ``k / (K - 1)``) or an explicit 1-D sequence of thresholds; or
            per-group thresholds, a ``[K, 2]`` array of ``(tau_a, tau_b)`` pairs (see
            :func:`make_grid` and :func:`product_grid`).
        n_constraints: M residuals per observation (0 allowed).
        bound: "ucb1" (default), "hoeffding" or "bernstein" (empirical Bernstein).
        alpha: exploration constant of ucb1, ``rad = scale * sqrt(alpha * log(max(t, 2)) / w)``.
        delta: confidence of hoeffding / bernstein, ``L = log(2 K T / delta)``.
        horizon: T of hoeffding / bernstein, in individuals; None: anytime (individuals seen).
        like: an array whose library and device hold the state (numpy when None).
        per_group: the arms are the product of ``grid`` with itself, one threshold per group
            (e.g. ``grid=21, per_group=True``: 441 arms); the kernels are the same, only the
            meaning of an arm changes (``grid[arms]`` are ``[B, 2]`` threshold pairs).

    ``scale`` is 1 for the reward and 2 for a residual; ``w`` and ``t`` count individuals.
    With the state in torch, ``update`` and ``select`` are the custom ops
    ``torch.ops.fairkernels.bandit_update`` / ``bandit_select`` under ``torch.compile``.
    """

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, n_constraints: int = 1,
                 *, bound: str = "ucb1", alpha: float = 2.0, delta: float = 0.05, horizon: Optional[float] = None,
                 like: Any = None, per_group: bool = False) -> None:
        self.n_learners = integer(n_learners, "n_learners", 1)
        self.grid = make_grid(grid, per_group)
        self.n_constraints = integer(n_constraints, "n_constraints", 0)
        self.bound = choice(bound, "bound", BOUNDS)
        self._bound = bound_options(bound, alpha, delta, horizon)
        self.alpha, self.delta, self.horizon = self._bound.alpha, self._bound.delta, self._bound.horizon
        self._like = _like_view(like)
        B, K, V = self.n_learners, self.n_arms, 1 + self.n_constraints
        shapes = {"count": (B, K), "rounds": (B, K), "total": (B,), "sum": (B, V, K), "sumsq": (B, V, K),
                  "mean": (B, V, K), "inv_sqrt": (B, K)}
        self._state = {name: _arrays.zeros(self._like, shape, "float64", name,
                                           math.inf if name == "inv_sqrt" else 0.0)  # +inf while untried
                       for name, shape in shapes.items()}
        self._anchor = self._state["count"]
        self._struct = state_struct(self._state, self.n_constraints)
        self._status = _arrays.zeros(self._like, (2,), "int64", "status") if self._anchor.on_cuda else None

    # -- state ------------------------------------------------------------------------------
    @property
    def n_arms(self) -> int:
        """K, the number of arms (grid thresholds, or threshold pairs with per-group thresholds)."""
        return int(self.grid.shape[0])

    @property
    def per_group(self) -> bool:
        """Whether each arm is a pair of thresholds, one per group (``grid`` is ``[K, 2]``)."""
        return self.grid.ndim == 2

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

    @property
    def state_arrays(self) -> dict[str, Array]:
        """The state arrays by name (the live state: do not modify)."""
        return {name: v.array for name, v in self._state.items()}

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
        total count (a float64 sum of weights: exact integers below 2**53) overflow.  Inputs
        are never modified
        (inputs of another dtype or layout are converted into a copy); they must be arrays
        of the state's library and device (lists are not converted).
        """
        if _compiling(self._state):
            from .. import _torch_ops

            _torch_ops.bandit_update(self, arms, rewards, residuals, weight, _lambdas, _eta)
            return
        update_state(self._state, self._struct, arms, rewards, residuals, weight, _lambdas, _eta, self._status)

    def select(self, rule: str = "ofs", lambdas: Optional[Array] = None) -> Array:
        """Computes the bounds and applies ``rule`` ("ofs", "ucb" or "primal_dual") in one pass.

        Returns ``[B]`` int64 arms in the state's library and device.  ``lambdas`` (``[B, M]``
        float64, primal_dual only) are the multipliers.  Untried arms come first, ties go to
        the lowest index.
        """
        return self._select(rule, lambdas, want_bounds=False)[0]

    def bounds(self) -> tuple[Array, Array]:
        """``(ucb [B, K], lcb [B, M, K])``: optimistic reward and optimistic residuals."""
        _, ucb, lcb = self._select("ofs", None, want_bounds=True)
        return ucb, lcb

    def _select(self, rule: str, lambdas: Optional[Array], want_bounds: bool):
        if _compiling(self._state):
            from .. import _torch_ops

            return _torch_ops.bandit_select(self, rule, lambdas, want_bounds)
        return select_arms(self._state, self._struct, self._bound, rule, lambdas, want_bounds)


class _Policy:
    """Shared interface: ``select() -> arms [B]``, ``update(arms, rewards, residuals, weight)``."""

    rule = "ofs"

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, n_constraints: int = 1,
                 *, bound: str = "ucb1", alpha: float = 2.0, delta: float = 0.05, horizon: Optional[float] = None,
                 like: Any = None, per_group: bool = False) -> None:
        self.state = GridBounds(n_learners, grid, n_constraints, bound=bound, alpha=alpha, delta=delta,
                                horizon=horizon, like=like, per_group=per_group)

    @property
    def grid(self) -> np.ndarray:
        """``[K]`` thresholds, or ``[K, 2]`` per-group pairs (numpy); ``policy.grid[arms]`` are
        the chosen thresholds."""
        return self.state.grid

    @property
    def per_group(self) -> bool:
        return self.state.per_group

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
            eta = 1.0 / math.sqrt(integer(n_rounds, "n_rounds", 1))
        self.eta = real(eta, "eta", 0.0)
        like = self.state._like
        self._lambdas = _arrays.zeros(like, (self.n_learners, self.state.n_constraints), "float64", "lambdas")
        self._eta = _arrays.zeros(like, (self.n_learners,), "float64", "eta", self.eta)

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
    """Always plays one arm (given by index ``arm`` or the grid point nearest ``threshold``;
    with per-group thresholds ``threshold`` is a pair ``(tau_a, tau_b)`` and the nearest pair,
    in the largest of the two distances, is played)."""

    rule = "fixed"

    def __init__(self, n_learners: int, grid: Union[int, Sequence[float], np.ndarray] = 51, *,
                 arm: Optional[int] = None, threshold: Union[float, Sequence[float], None] = None,
                 like: Any = None, per_group: bool = False) -> None:
        self.n_learners = integer(n_learners, "n_learners", 1)
        self.grid = make_grid(grid, per_group)
        if (arm is None) == (threshold is None):
            raise ValueError("give exactly one of arm and threshold")
        if arm is None:
            arm = self._nearest_arm(threshold)
        self.arm = integer(arm, "arm", 0, self.grid.shape[0] - 1)
        self._like = _like_view(like)

    @property
    def per_group(self) -> bool:
        return self.grid.ndim == 2

    def _nearest_arm(self, threshold: Any) -> int:
        if not self.per_group:
            return int(np.argmin(np.abs(self.grid - real(threshold, "threshold"))))
        if isinstance(threshold, (str, bytes)) or np.ndim(threshold) != 1 or len(threshold) != 2:
            raise TypeError("threshold must be a pair (tau_a, tau_b) with per-group thresholds")
        pair = np.array([real(t, "threshold") for t in threshold])
        return int(np.argmin(np.abs(self.grid - pair).max(axis=1)))

    def select(self) -> Array:
        return _arrays.zeros(self._like, (self.n_learners,), "int64", "arms", self.arm).array

    def update(self, arms: Array, rewards: Array, residuals: Optional[Array] = None,
               weight: Union[float, Array] = 1.0) -> None:
        """Nothing to learn."""
