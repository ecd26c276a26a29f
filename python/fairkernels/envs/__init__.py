"""Closed-loop environments for fair threshold decisions, each reduced to one
:class:`fairkernels.bandits.EnvTable` (per group and threshold: acceptance rates given the
label; base rates; group-share dynamics), which the fused episode kernel runs for B learners.

* ``synthetic``: Beta score distributions, no data needed (the default).
* ``german``: UCI German Credit, logistic-regression scores, group a = age > 25.
* ``compas``: ProPublica COMPAS two-year recidivism, Caucasian (a) vs African-American (b).
"""

from __future__ import annotations

from typing import Any

from ..bandits import EnvTable
from .facts import EnvFacts, env_facts

ENVIRONMENTS = ("synthetic", "german", "compas")


def make_env(name: str, **options: Any) -> EnvTable:
    """The environment table of ``name`` with its defaults, overridden by ``options``."""
    if name == "synthetic":
        from .synthetic import make_table
    elif name == "german":
        from .german import make_table
    elif name == "compas":
        from .compas import make_table
    else:
        raise ValueError(f"name must be one of {', '.join(map(repr, ENVIRONMENTS))}, got {name!r}")
    return make_table(**options)


__all__ = ["ENVIRONMENTS", "EnvFacts", "env_facts", "make_env"]
