"""Fair thresholds learned online, in fairlearn's conventions.

:class:`OnlineThresholdOptimizer` runs Optimistic Feasible Search (:class:`fairkernels.OFS`)
on real decisions: each round it returns accept / reject decisions from one threshold per
group (or one shared threshold), then learns from the labels observed for the accepted rows
only (one-sided feedback).  It computes the round's reward and demographic-parity residual
itself, so a user never writes them by hand.  fairlearn's ``ThresholdOptimizer`` is its offline
counterpart (fitted once on a labelled pool).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from . import _arrays
from ._options import boolean, choice, integer, real
from .bandits import OFS
from .bandits.policies import BOUNDS, make_grid

CONSTRAINTS = ("demographic_parity",)
_PARAMS = ("constraints", "tol", "per_group", "grid", "bound", "random_state", "cost", "groups", "alpha",
           "min_round_size")


@dataclass
class _Round:
    """What the batches played with the current thresholds add up to (per group: a, b)."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(2))
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(2))
    tp: float = 0.0
    fp: float = 0.0
    batches: int = 0


def _numpy_1d(values: Any, name: str) -> np.ndarray:
    """A 1-D array-like (numpy, list, pandas, torch, CuPy) as numpy values; never a view that
    could be written through."""
    array = np.asarray(_arrays.host_values(values, name))
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per row), got shape {array.shape}")
    return array


def _rows(name: str, array: np.ndarray, n: int, first: str) -> None:
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} rows but {first} has {n}")


class OnlineThresholdOptimizer:
    """Learns fair acceptance thresholds online with Optimistic Feasible Search.

    Each round: ``decisions = est.predict(scores, sensitive_features=groups)`` accepts row i
    iff ``scores[i] >= thresholds_[groups[i]]``; after acting on them,
    ``est.partial_fit(scores, decisions, y_observed, sensitive_features=groups)`` feeds back the
    labels, known only for accepted rows (NaN for rejected ones).  The estimator computes the
    round's reward ``(TP - c FP + c n) / ((1 + c) n)`` and demographic-parity residual
    ``|A_a - A_b| - tol`` (A_g = share of group g accepted), adds them to the arm played with
    weight n (counts in individuals) and picks the next thresholds by the OFS rule: the most
    rewarding arm whose optimistic residual is feasible, else the least violating one.

    Args:
        constraints: "demographic_parity" (the only constraint observable under one-sided
            feedback: parities of error rates need the labels of rejected rows).
        tol: allowed gap between the groups' acceptance rates, in [0, 1].
        per_group: one threshold per group (the product grid, ``grid**2`` arms) or one shared
            threshold (``grid`` arms).
        grid: thresholds per group: an int K (``k / (K - 1)``, for scores in [0, 1]) or a 1-D
            sequence.
        bound: confidence bound of OFS ("ucb1", "hoeffding", "bernstein").
        random_state: None explores untried arms in grid order (lowest index first, fully
            deterministic); an int or ``numpy.random.Generator`` explores them, and breaks ties,
            in a random order of the arms drawn once.
        cost: c, the cost of a false positive relative to a true positive's gain (>= 0).
        groups: the two values of ``sensitive_features`` (in that order: group a, group b);
            None takes them, sorted, from the first batch, which must then hold both.
        alpha: exploration constant of ucb1.
        min_round_size: a round (the batches played with the same thresholds) closes at the
            end of a ``partial_fit`` once it holds at least this many rows and both groups; it
            then updates the learner and the thresholds change.  Batches of any size work:
            small ones accumulate into one round.

    Attributes (after the first ``predict`` or ``partial_fit``):
        groups_: ``[2]`` the group values (a, b).
        grid_: ``[K]`` or ``[K, 2]`` the thresholds of the arms (per group: columns a, b).
        thresholds_: ``{group: threshold}`` in force for the next ``predict``.
        history_: one dict per closed round: ``thresholds``, ``n`` (rows), ``acceptance``
            (``{group: rate}``), ``reward``, ``residual``, ``batches``.
        n_rounds_: closed rounds so far.

    ``get_params`` / ``set_params`` follow scikit-learn (``sklearn.base.clone`` works);
    ``set_params`` discards what was learned, since the arms or their meaning may change.
    """

    def __init__(self, constraints: str = "demographic_parity", tol: float = 0.05, per_group: bool = True,
                 grid: Any = 21, bound: str = "ucb1", random_state: Any = None, *, cost: float = 1.0,
                 groups: Optional[Sequence[Any]] = None, alpha: float = 2.0, min_round_size: int = 1) -> None:
        # scikit-learn convention: store the parameters as given, validate when first used.
        self.constraints = constraints
        self.tol = tol
        self.per_group = per_group
        self.grid = grid
        self.bound = bound
        self.random_state = random_state
        self.cost = cost
        self.groups = groups
        self.alpha = alpha
        self.min_round_size = min_round_size

    # -- scikit-learn parameter protocol -----------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters by name (no nested estimators, so ``deep`` changes nothing)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> OnlineThresholdOptimizer:
        """Sets constructor parameters; forgets everything learned.  Returns self."""
        for name in params:
            if name not in _PARAMS:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are: {', '.join(_PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        self._forget()
        return self

    def __repr__(self) -> str:
        defaults = OnlineThresholdOptimizer().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    # -- the online loop -----------------------------------------------------------------------
    def predict(self, scores: Any, *, sensitive_features: Any) -> np.ndarray:
        """``[n]`` int64 decisions (1 = accept) of the thresholds in force for these rows."""
        score, group_index = self._batch(scores, sensitive_features)
        return self._decide(score, group_index)

    def partial_fit(self, scores: Any, decisions: Any, y_observed: Any, *,
                    sensitive_features: Any) -> OnlineThresholdOptimizer:
        """Learns from one batch played with the thresholds in force.

        Args:
            scores: ``[n]`` the rows' scores (as given to ``predict``).
            decisions: ``[n]`` the decisions acted on: 0 / 1 (or bool), equal to what
                ``predict`` returned for these rows.
            y_observed: ``[n]`` labels 0 / 1 for accepted rows, NaN for rejected ones.
            sensitive_features: ``[n]`` each row's group.

        Raises ValueError naming the argument for mismatched lengths, an unknown group,
        decisions that are not those of the thresholds in force, labels given for rejected
        rows or missing for accepted ones, or labels other than 0 / 1.  Returns self.
        """
        score, group_index = self._batch(scores, sensitive_features)
        n = score.shape[0]
        decided = self._decisions(decisions, n)
        label = self._labels(y_observed, decided, n)
        expected = self._decide(score, group_index)
        if not np.array_equal(decided, expected):
            wrong = int(np.count_nonzero(decided != expected))
            raise ValueError(f"decisions: {wrong} of {n} rows differ from the decisions of the thresholds in force "
                             f"({self.thresholds_}); pass the decisions predict returned for this batch")
        self._accumulate(group_index, decided, label)
        self._round.batches += 1
        if self._round_complete():
            self._close_round()
        return self

    # -- internals ---------------------------------------------------------------------------
    def _forget(self) -> None:
        for name in ("groups_", "grid_", "thresholds_", "history_", "n_rounds_", "_policy", "_arm", "_round",
                     "_options"):
            self.__dict__.pop(name, None)

    def _validated_options(self) -> dict[str, Any]:
        choice(self.constraints, "constraints", CONSTRAINTS)
        options = {
            "tol": real(self.tol, "tol", 0.0, 1.0),
            "per_group": boolean(self.per_group, "per_group"),
            "bound": choice(self.bound, "bound", BOUNDS),
            "cost": real(self.cost, "cost", 0.0),
            "alpha": real(self.alpha, "alpha", 0.0, open_low=True),
            "min_round_size": integer(self.min_round_size, "min_round_size", 1),
        }
        grid = make_grid(self.grid)
        if grid.ndim != 1:
            raise ValueError("grid must be an int or a 1-D sequence of thresholds (used for each group)")
        options["thresholds"] = grid
        return options

    def _start(self, group_values: np.ndarray) -> None:
        """First call: validates the parameters, fixes the groups and the arms, picks the first arm."""
        options = self._validated_options()
        if self.groups is not None:
            groups = _numpy_1d(self.groups, "groups")
            if groups.shape[0] != 2 or groups[0] == groups[1]:
                raise ValueError(f"groups must name two distinct groups, got {list(groups)}")
        else:
            groups = np.unique(group_values)
            if groups.shape[0] != 2:
                raise ValueError(f"sensitive_features: the first batch holds {groups.shape[0]} group(s); "
                                 "OnlineThresholdOptimizer needs exactly two: pass groups=[a, b] when the "
                                 "first batch does not hold both")
        grid = make_grid(options["thresholds"], options["per_group"])
        order = self._arm_order(grid.shape[0])
        self._options = options
        self.groups_ = groups
        self.grid_ = grid[order]
        self._policy = OFS(1, self.grid_, 1, bound=options["bound"], alpha=options["alpha"])
        self.history_: list[dict[str, Any]] = []
        self.n_rounds_ = 0
        self._new_round()
        self._select()

    def _arm_order(self, n_arms: int) -> np.ndarray:
        if self.random_state is None:
            return np.arange(n_arms)
        if isinstance(self.random_state, np.random.Generator):
            rng = self.random_state
        elif isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            rng = np.random.default_rng(integer(self.random_state, "random_state", 0))
        else:
            raise TypeError("random_state must be None, a non-negative int or a numpy.random.Generator, got "
                            f"{type(self.random_state).__name__}")
        return rng.permutation(n_arms)

    def _select(self) -> None:
        self._arm = int(self._policy.select()[0])
        pair = self.grid_[self._arm]
        values = (pair[0], pair[1]) if pair.ndim else (pair, pair)
        self.thresholds_ = {_plain(g): float(t) for g, t in zip(self.groups_, values)}
        self._threshold_array = np.array(values, dtype=np.float64)

    def _batch(self, scores: Any, sensitive_features: Any) -> tuple[np.ndarray, np.ndarray]:
        """(scores float64 [n], group index 0 / 1 [n]), validated."""
        group_values = _numpy_1d(sensitive_features, "sensitive_features")
        raw = _numpy_1d(scores, "scores")
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"scores must be real numbers, got dtype {raw.dtype}")
        score = raw.astype(np.float64)
        _rows("sensitive_features", group_values, score.shape[0], "scores")
        if not np.all(np.isfinite(score)):
            raise ValueError("scores must be finite")
        if not hasattr(self, "_policy"):
            self._start(group_values)
        return score, self._group_index(group_values)

    def _group_index(self, values: np.ndarray) -> np.ndarray:
        is_a, is_b = values == self.groups_[0], values == self.groups_[1]
        unknown = ~(is_a | is_b)
        if np.any(unknown):
            names = [_plain(v) for v in np.unique(values[unknown])[:5]]
            raise ValueError(f"sensitive_features: unknown group(s) {names}; this estimator's groups are "
                             f"{[_plain(g) for g in self.groups_]}")
        return is_b.astype(np.int64)

    def _decide(self, score: np.ndarray, group_index: np.ndarray) -> np.ndarray:
        return (score >= self._threshold_array[group_index]).astype(np.int64)

    @staticmethod
    def _decisions(decisions: Any, n: int) -> np.ndarray:
        d = _numpy_1d(decisions, "decisions")
        _rows("decisions", d, n, "scores")
        if d.dtype.kind not in "biuf" or not np.all((d == 0) | (d == 1)):
            raise ValueError("decisions must be 0 / 1 (or bool), one per row")
        return d.astype(np.int64)

    @staticmethod
    def _labels(y_observed: Any, decided: np.ndarray, n: int) -> np.ndarray:
        raw = _numpy_1d(y_observed, "y_observed")
        _rows("y_observed", raw, n, "scores")
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"y_observed must be numbers (0 / 1, NaN where rejected), got dtype {raw.dtype}")
        y = raw.astype(np.float64)
        known = ~np.isnan(y)
        accepted = decided == 1
        if np.any(known & ~accepted):
            raise ValueError(f"y_observed: labels given for {int(np.count_nonzero(known & ~accepted))} rejected "
                             "row(s); with one-sided feedback only accepted rows have labels (use NaN elsewhere)")
        if np.any(~known & accepted):
            raise ValueError(f"y_observed: {int(np.count_nonzero(~known & accepted))} accepted row(s) lack a "
                             "label (NaN); every accepted row needs its observed label")
        if not np.all((y[known] == 0) | (y[known] == 1)):
            raise ValueError("y_observed: labels must be 0 or 1")
        return y

    def _new_round(self) -> None:
        self._round = _Round()

    def _accumulate(self, group_index: np.ndarray, decided: np.ndarray, label: np.ndarray) -> None:
        r = self._round
        r.rows += np.bincount(group_index, minlength=2)
        r.accepted += np.bincount(group_index, weights=decided, minlength=2)
        accepted = decided == 1
        r.tp += float(np.count_nonzero(accepted & (label == 1)))
        r.fp += float(np.count_nonzero(accepted & (label == 0)))

    def _round_complete(self) -> bool:
        rows = self._round.rows
        return bool(np.all(rows > 0) and rows.sum() >= self._options["min_round_size"])

    def _close_round(self) -> None:
        r, c = self._round, self._options["cost"]
        n = float(r.rows.sum())
        reward = (r.tp - c * r.fp + c * n) / ((1 + c) * n)
        acceptance = r.accepted / r.rows
        residual = abs(acceptance[0] - acceptance[1]) - self._options["tol"]
        # Clipping only absorbs rounding: reward is in [0, 1] and residual in [-tol, 1 - tol].
        reward = min(max(reward, 0.0), 1.0)
        self._policy.update(np.array([self._arm]), np.array([reward]), np.array([[residual]]), weight=n)
        self.history_.append({
            "thresholds": dict(self.thresholds_), "n": int(n),
            "acceptance": {_plain(g): float(a) for g, a in zip(self.groups_, acceptance)},
            "reward": float(reward), "residual": float(residual), "batches": r.batches,
        })
        self.n_rounds_ += 1
        self._new_round()
        self._select()


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (readable dict keys); other values unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b


__all__ = ["CONSTRAINTS", "OnlineThresholdOptimizer"]
