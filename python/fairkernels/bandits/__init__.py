"""Grid confidence bounds and Optimistic Feasible Search (OFS) for fair threshold decisions.

B independent learners each pick one threshold per round from a K-point grid; after the round
they observe the reward and M constraint residuals (feasible iff <= 0) of the chosen threshold,
averaged over ``weight`` individuals.  Counts are in individuals, not rounds.

* :mod:`.policies`: :class:`GridBounds`, the batched state (counts, sums, sums of squares,
  running means) with ``update`` (one observation per learner) and ``select`` (bounds +
  selection rule, one pass), and the policies on top of it, :class:`OFS`, :class:`UCB`,
  :class:`PrimalDual` and :class:`FixedThreshold`, with one interface: ``arms =
  policy.select()``; ``policy.update(arms, rewards, residuals, weight=n)``.
* :mod:`.episodes`: :class:`EnvTable`, a closed-loop environment reduced to a table, and
  :func:`run_episodes`, which runs whole closed-loop episodes of many learners inside the
  compiled core.

Per-group thresholds (beyond the paper): with ``per_group=True`` (or a ``[K, 2]`` grid of
``(tau_a, tau_b)`` pairs) every policy, and :func:`run_episodes`, plays arms that are pairs of
thresholds, one per group, over the product grid (e.g. 21 x 21 = 441 arms); the kernels and
rules are the same, only what an arm means changes.

One device convention for the whole family: state and results live in the library and device
of ``like`` (numpy on the CPU when None; a torch tensor or CuPy array puts them there).  numpy
and CPU torch run on the C++ kernels (cpp/bandits.cc), CUDA torch and CuPy on the CUDA kernels
(cuda/bandits.cu) on the caller's current stream.
"""

from __future__ import annotations

from .episodes import EnvTable, EpisodeTraces, pair_arms, pair_columns, run_episodes
from .policies import BOUNDS, OFS, RULES, UCB, FixedThreshold, GridBounds, PrimalDual, make_grid, product_grid

__all__ = [
    "BOUNDS",
    "OFS",
    "RULES",
    "UCB",
    "EnvTable",
    "EpisodeTraces",
    "FixedThreshold",
    "GridBounds",
    "PrimalDual",
    "make_grid",
    "pair_arms",
    "pair_columns",
    "product_grid",
    "run_episodes",
]
