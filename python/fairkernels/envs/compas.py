"""ProPublica COMPAS two-year recidivism: standard filter (6172 rows), Caucasian (a) vs
African-American (b) only (5278 rows).  Favourable label: no recidivism in two years; score =
P(no recidivism) from a logistic regression on age, sex, priors, juvenile counts and charge
degree (not race), trained on a 50% split stratified by group x label; the other half is the
pool.  p0 = the pool's share of group a; eps = 0.1; n = 2000."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ..bandits import EnvTable
from ..datasets import PathLike, load_compas
from ._scored import fit_scores, split_pool, table_from_pool


def make_table(grid: Union[int, Sequence[float]] = 51, *, cost: float = 1.0, eps: float = 0.1, split_seed: int = 0,
               beta: float = 0.05, kappa: float = 4.0, cohort: int = 2000, rho_min: Optional[float] = None,
               p0: Optional[float] = None, path: Optional[PathLike] = None) -> EnvTable:
    """The COMPAS table.  ``path``: a local copy of the CSV to read instead of the one the data
    lookup finds (checked like any copy: see :mod:`fairkernels.datasets`)."""
    table = load_compas(path)
    train, pool = split_pool(table, split_seed)
    scores = fit_scores(table, train, pool)
    return table_from_pool(scores, table.label[pool], table.group[pool], grid, name="compas", p0=p0, beta=beta,
                           kappa=kappa, cohort=cohort, cost=cost, eps=eps, rho_min=rho_min)
