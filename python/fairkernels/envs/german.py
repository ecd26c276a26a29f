"""UCI German Credit: label 1 = good credit, group a = age > 25 (81% of rows), scores from a
logistic regression without age on a 50% split stratified by group x label; the other half is
the pool.  Two settings of the spec: cost c = 1 with eps = 0.05 (default), and c = 5 (the UCI
cost matrix) with eps = 0.1.  The pool has only ~95 people aged 25 or less, so the DP curve is
jagged: the split seed is fixed and the facts report whether the constraint binds."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ..bandits import EnvTable
from ..datasets import PathLike, load_german
from ._scored import fit_scores, split_pool, table_from_pool

SETTINGS = {1.0: 0.05, 5.0: 0.1}  # cost -> eps


def make_table(grid: Union[int, Sequence[float]] = 51, *, cost: float = 1.0, eps: Optional[float] = None,
               split_seed: int = 0, beta: float = 0.05, kappa: float = 4.0, cohort: int = 2000,
               rho_min: Optional[float] = None, p0: Optional[float] = None,
               path: Optional[PathLike] = None) -> EnvTable:
    """The German Credit table; ``eps`` defaults to the spec's value for ``cost`` (0.05 for c = 1,
    0.1 for c = 5).  ``path``: a local copy of ``german.data`` to read instead of the one the
    data lookup finds (checked like any copy: see :mod:`fairkernels.datasets`)."""
    if eps is None:
        eps = SETTINGS.get(float(cost), 0.1)
    table = load_german(path)
    train, pool = split_pool(table, split_seed)
    scores = fit_scores(table, train, pool)
    return table_from_pool(scores, table.label[pool], table.group[pool], grid, name=f"german(c={cost:g})", p0=p0,
                           beta=beta, kappa=kappa, cohort=cohort, cost=cost, eps=eps, rho_min=rho_min)
