"""The per-group comparison of experiments/ofs/per_group.py: its expected-value tables against
the reference, the extra policy column, and a short run end to end."""

from __future__ import annotations

import numpy as np
import pytest

from bandits_reference import reference_pair_steady
from fairkernels.bandits import pair_arms, run_episodes
from fairkernels.envs import make_env
from fairkernels.experiments.ofs.per_group import (
    PerGroupConfig,
    describe,
    pair_expected_steady,
    policy_class_facts,
    run_per_group,
    with_policy_column,
)


def test_pair_expectations_match_the_reference():
    env = make_env("synthetic", grid=7, cost=2.0)
    pairs = pair_expected_steady(env)
    for k_a in range(7):
        for k_b in range(7):
            reward, residual, share = reference_pair_steady(env.tpr, env.fpr, env.base_rate, k_a, k_b, env.p0,
                                                            env.kappa, env.cost, env.eps)
            assert pairs["reward"][k_a, k_b] == pytest.approx(reward, abs=1e-12)
            assert pairs["residual"][k_a, k_b] == pytest.approx(residual, abs=1e-12)
            assert pairs["share"][k_a, k_b] == pytest.approx(share, abs=1e-12)
    # The diagonal is the shared threshold: EnvTable's own steady expectation.
    steady = env.expected_steady()
    np.testing.assert_allclose(np.diag(pairs["reward"]), steady["reward"], atol=1e-12)
    facts = policy_class_facts(env)
    assert facts["best_pair"]["reward"] >= facts["best_shared"]["reward"]


def test_policy_column_plays_the_policy():
    """A column holding column 3's rates for both groups plays exactly as the fixed arm (3, 3)."""
    env = make_env("synthetic", grid=9)
    extended = with_policy_column(env, env.tpr[:, 3], env.fpr[:, 3])
    a = run_episodes(extended, ["fixed"] * 2, fixed_arms=[int(pair_arms(10, 9, 9))] * 2, n_rounds=120, n_buckets=6,
                     per_group=True)
    b = run_episodes(env, ["fixed"] * 2, fixed_arms=[3, 3], n_rounds=120, n_buckets=6)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.residual, b.residual)


def test_short_comparison_runs_end_to_end():
    fairlearn = pytest.importorskip("fairlearn")
    config = PerGroupConfig(env="synthetic", seeds=2, horizon=300, grid=7, buckets=10, synthetic_pool=4000)
    results = run_per_group(config)
    methods = [row["method"] for row in results["rows"]]
    assert methods[0] == "OFS shared" and "OFS per-group" in methods
    assert methods[-1].startswith(f"fairlearn {fairlearn.__version__}")
    oracle_rows = [row for row in results["rows"] if row["method"].startswith("oracle")]
    assert len(oracle_rows) == 2 and all(row["gap_to_oracle"] == 0 for row in oracle_rows)
    assert all(row["steady_residual"] <= 0 for row in oracle_rows)
    rates = results["fairlearn"]
    assert all(0 <= v <= 1 for v in rates["tpr"] + rates["fpr"])
    text = describe(results)
    assert "| OFS per-group |" in text and "rounds until OFS per-group -> fairlearn" in text
