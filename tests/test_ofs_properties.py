"""The synthetic closed-loop dynamics, property-based (hypothesis)."""

from __future__ import annotations

import math

import pytest

from fairkernels.envs.synthetic import make_table as synthetic_table

pytest.importorskip("hypothesis")  # GPU machines may lack it
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 20), beta=st.floats(0.01, 1.0), kappa=st.floats(-3.9, 3.9), p0=st.floats(0.05, 0.95),
       starts=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=4))
def test_synthetic_dynamics_contract_to_unique_fixed_point(k, beta, kappa, p0, starts):
    """For every fixed threshold the expected share map is a contraction (beta * kappa / 4 < 1):
    from any start the share converges to the same fixed point, steady_share()."""
    env = synthetic_table(grid=21, beta=beta, kappa=kappa, p0=p0)
    e = env.expected()
    gap = e["accept_a"][k] - e["accept_b"][k]

    def step(p):
        return (1 - beta) * p + beta / (1 + math.exp(-(math.log(p0 / (1 - p0)) + kappa * gap)))

    fixed = env.steady_share()[k]
    assert abs(step(fixed) - fixed) < 1e-12
    for a, b in zip(starts, starts[1:]):
        assert abs(step(a) - step(b)) <= (1 - beta) * abs(a - b) + 1e-15
    for p in starts:
        for _ in range(int(60 / beta)):
            p = step(p)
        assert p == pytest.approx(fixed, abs=1e-9)
