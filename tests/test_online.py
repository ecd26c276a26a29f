"""fairkernels.OnlineThresholdOptimizer: against a hand-written OFS loop, batching, errors and
the scikit-learn parameter protocol."""

from __future__ import annotations

import numpy as np
import pytest

import fairkernels
from fairkernels import OnlineThresholdOptimizer
from fairkernels.bandits import OFS, make_grid


def stream(n_rounds, n, seed=0, groups=("a", "b")):
    """Batches (scores, groups, labels) of a two-group population with different base rates."""
    rng = np.random.default_rng(seed)
    for _ in range(n_rounds):
        is_b = rng.random(n) < 0.45
        y = (rng.random(n) < np.where(is_b, 0.4, 0.6)).astype(np.float64)
        scores = np.clip(0.45 * y + rng.normal(np.where(is_b, 0.2, 0.3), 0.18, n), 0.0, 1.0)
        yield scores, np.where(is_b, groups[1], groups[0]), y


def play(est, batches):
    """The closed loop: predict, reveal the labels of the accepted rows, partial_fit."""
    for scores, groups, y in batches:
        decisions = est.predict(scores, sensitive_features=groups)
        est.partial_fit(scores, decisions, np.where(decisions == 1, y, np.nan), sensitive_features=groups)
    return est


def reference_round(scores, groups, y, tau, tol, cost):
    """Reward and DP residual of one round written out from the definitions."""
    accept = np.array([s >= tau[0 if g == "a" else 1] for s, g in zip(scores, groups)])
    tp = sum(1 for d, label in zip(accept, y) if d and label == 1)
    fp = sum(1 for d, label in zip(accept, y) if d and label == 0)
    n = len(scores)
    rate = [accept[groups == g].mean() for g in ("a", "b")]
    return (tp - cost * fp + cost * n) / ((1 + cost) * n), abs(rate[0] - rate[1]) - tol


@pytest.mark.parametrize("per_group", [True, False])
@pytest.mark.parametrize("cost", [1.0, 3.0])
def test_matches_a_hand_written_ofs_loop(per_group, cost):
    """Same thresholds, rewards and residuals as OFS fed by the reference formulas."""
    batches = list(stream(60, 150, seed=1))
    est = play(OnlineThresholdOptimizer(tol=0.05, per_group=per_group, grid=6, cost=cost), batches)
    grid = make_grid(6, per_group)
    policy = OFS(1, grid, 1)
    for t, (scores, groups, y) in enumerate(batches):
        arm = policy.select()
        tau = grid[arm[0]] if per_group else np.repeat(grid[arm[0]], 2)
        reward, residual = reference_round(scores, groups, y, tau, 0.05, cost)
        record = est.history_[t]
        assert record["thresholds"] == {"a": tau[0], "b": tau[1]}
        assert record["reward"] == pytest.approx(reward, abs=1e-15)
        assert record["residual"] == pytest.approx(residual, abs=1e-15)
        assert record["n"] == 150 and record["batches"] == 1
        policy.update(arm, np.array([reward]), np.array([[residual]]), weight=150.0)
    assert est.n_rounds_ == 60 and len(est.history_) == 60
    final = grid[policy.select()[0]]
    assert est.thresholds_ == ({"a": final[0], "b": final[1]} if per_group else {"a": final, "b": final})
    # It explored: more than one pair of thresholds was played.
    assert len({tuple(h["thresholds"].values()) for h in est.history_}) > 5


def test_batches_of_any_size_make_the_same_rounds():
    """One round given in one batch or in 7 pieces (min_round_size = its size) is the same round;
    batches of one row accumulate until both groups have been seen."""
    batches = list(stream(25, 140, seed=2))
    whole = play(OnlineThresholdOptimizer(grid=5, min_round_size=140), batches)
    pieces = OnlineThresholdOptimizer(grid=5, min_round_size=140)
    for scores, groups, y in batches:
        for part in np.array_split(np.arange(140), 7):
            play(pieces, [(scores[part], groups[part], y[part])])
    assert pieces.history_ == [dict(h, batches=7) for h in whole.history_]
    single = OnlineThresholdOptimizer(grid=5, groups=["a", "b"])
    scores, groups, y = next(stream(1, 40, seed=3))
    for i in range(40):
        play(single, [(scores[i:i + 1], groups[i:i + 1], y[i:i + 1])])
    assert single.n_rounds_ >= 5
    assert all(set(h["acceptance"]) == {"a", "b"} and h["n"] >= 2 for h in single.history_)
    assert sum(h["n"] for h in single.history_) <= 40
    # An empty batch decides nothing and learns nothing.
    before = single.n_rounds_
    assert single.predict(np.zeros(0), sensitive_features=np.array([], dtype=str)).shape == (0,)
    single.partial_fit(np.zeros(0), np.zeros(0), np.zeros(0), sensitive_features=np.array([], dtype=str))
    assert single.n_rounds_ == before


def test_learns_the_best_feasible_pair():
    """On a stationary stream where no shared threshold is feasible (tol = 0.08), late rounds
    are feasible on average and mostly play the best feasible pair of the expected outcomes
    (estimated on a large sample: margin 0.03, the nearest better pair violates by 0.07)."""
    grid = np.linspace(0.2, 0.8, 7)
    est = play(OnlineThresholdOptimizer(tol=0.08, grid=grid), stream(1500, 400, seed=4))
    scores, groups, y = next(stream(1, 200000, seed=99))
    reward = np.zeros((7, 7))
    residual = np.zeros((7, 7))
    for i, ta in enumerate(grid):
        for j, tb in enumerate(grid):
            reward[i, j], residual[i, j] = reference_round(scores, groups, y, (ta, tb), 0.08, 1.0)
    assert not np.any(np.diag(residual) <= 0)  # one shared threshold cannot meet the constraint
    best = np.unravel_index(np.argmax(np.where(residual <= 0, reward, -np.inf)), reward.shape)
    late = est.history_[-300:]
    assert np.mean([h["residual"] for h in late]) <= 0.0
    assert np.mean([h["reward"] for h in late]) > reward[best] - 0.01
    played = [(h["thresholds"]["a"], h["thresholds"]["b"]) for h in late]
    assert played.count((grid[best[0]], grid[best[1]])) > len(late) // 2


def test_errors_name_the_argument():
    scores, groups, y = next(stream(1, 50, seed=5))
    est = OnlineThresholdOptimizer(grid=[0.4, 0.6])  # the first pair (0.4, 0.4) rejects some rows
    decisions = est.predict(scores, sensitive_features=groups)
    labels = np.where(decisions == 1, y, np.nan)
    with pytest.raises(ValueError, match="unknown group"):
        est.predict(scores, sensitive_features=np.where(groups == "a", "c", groups))
    with pytest.raises(ValueError, match="sensitive_features has 49 rows but scores has 50"):
        est.predict(scores, sensitive_features=groups[:-1])
    with pytest.raises(ValueError, match="y_observed has 49 rows"):
        est.partial_fit(scores, decisions, labels[:-1], sensitive_features=groups)
    with pytest.raises(ValueError, match="decisions has 49 rows"):
        est.partial_fit(scores, decisions[:-1], labels, sensitive_features=groups)
    with pytest.raises(ValueError, match="labels given for .* rejected"):
        est.partial_fit(scores, decisions, y, sensitive_features=groups)  # every label revealed
    with pytest.raises(ValueError, match="accepted row.* lack a label"):
        est.partial_fit(scores, decisions, np.full(50, np.nan), sensitive_features=groups)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        est.partial_fit(scores, decisions, labels * 2, sensitive_features=groups)
    with pytest.raises(ValueError, match="decisions: .* differ from the decisions of the thresholds in force"):
        est.partial_fit(scores, 1 - decisions, np.where(decisions == 0, y, np.nan), sensitive_features=groups)
    with pytest.raises(ValueError, match="decisions must be 0 / 1"):
        est.partial_fit(scores, decisions * 3, labels, sensitive_features=groups)
    with pytest.raises(ValueError, match="scores must be finite"):
        est.predict(np.full(50, np.nan), sensitive_features=groups)
    with pytest.raises(ValueError, match="scores must be 1-D"):
        est.predict(scores[None, :], sensitive_features=groups)
    assert est.n_rounds_ == 0  # nothing was learned from the bad calls
    est.partial_fit(scores, decisions, labels, sensitive_features=groups)
    assert est.n_rounds_ == 1
    with pytest.raises(ValueError, match="first batch holds 1 group"):
        OnlineThresholdOptimizer().predict(scores, sensitive_features=np.full(50, "a"))
    for params, error, message in [
        ({"constraints": "equalized_odds"}, ValueError, "constraints must be one of 'demographic_parity'"),
        ({"tol": 1.5}, ValueError, r"tol must be finite and in \[0.0, 1.0\]"),
        ({"per_group": 1}, TypeError, "per_group must be a bool"),
        ({"bound": "kl"}, ValueError, "bound must be one of"),
        ({"random_state": "x"}, TypeError, "random_state must be None"),
        ({"grid": np.zeros((3, 2))}, ValueError, "grid must be an int or a 1-D sequence"),
        ({"groups": ["a", "a"]}, ValueError, "groups must name two distinct groups"),
        ({"min_round_size": 0}, ValueError, "min_round_size must be >= 1"),
    ]:
        with pytest.raises(error, match=message):
            OnlineThresholdOptimizer(**params).predict(scores, sensitive_features=groups)


def test_inputs_are_not_modified_and_array_likes_are_taken():
    scores, groups, y = next(stream(1, 60, seed=6))
    copies = [a.copy() for a in (scores, groups, y)]
    a = OnlineThresholdOptimizer(grid=4)
    d = a.predict(scores, sensitive_features=groups)
    labels = np.where(d == 1, y, np.nan)
    a.partial_fit(scores, d, labels, sensitive_features=groups)
    for before, after in zip(copies, (scores, groups, y)):
        np.testing.assert_array_equal(before, after)
    b = OnlineThresholdOptimizer(grid=4)
    d_list = b.predict(scores.tolist(), sensitive_features=groups.tolist())
    np.testing.assert_array_equal(d_list, d)
    b.partial_fit(scores.tolist(), d.astype(bool).tolist(), labels.tolist(), sensitive_features=groups.tolist())
    assert b.history_ == a.history_
    # Integer group codes work the same as strings.
    c = play(OnlineThresholdOptimizer(grid=4), [(scores, (groups == "b").astype(int), y)])
    assert c.history_[0]["reward"] == a.history_[0]["reward"] and set(c.thresholds_) == {0, 1}


def test_scikit_learn_parameter_protocol_and_clone():
    sklearn_base = pytest.importorskip("sklearn.base")
    est = OnlineThresholdOptimizer(tol=0.1, per_group=False, grid=11, bound="bernstein", random_state=3, cost=2.0)
    params = est.get_params()
    assert params == {"constraints": "demographic_parity", "tol": 0.1, "per_group": False, "grid": 11,
                      "bound": "bernstein", "random_state": 3, "cost": 2.0, "groups": None, "alpha": 2.0,
                      "min_round_size": 1}
    play(est, stream(5, 80, seed=7))
    twin = sklearn_base.clone(est)
    assert twin.get_params() == params and not hasattr(twin, "thresholds_")
    assert play(twin, stream(5, 80, seed=7)).history_ == est.history_
    assert est.set_params(tol=0.2) is est and est.tol == 0.2 and not hasattr(est, "history_")
    with pytest.raises(ValueError, match="Invalid parameter 'eps'"):
        est.set_params(eps=0.1)
    assert repr(OnlineThresholdOptimizer(tol=0.1)) == "OnlineThresholdOptimizer(tol=0.1)"


def test_random_state_orders_the_exploration():
    def first_pairs(random_state):
        est = play(OnlineThresholdOptimizer(grid=5, random_state=random_state), stream(12, 60, seed=8))
        return [tuple(h["thresholds"].values()) for h in est.history_]

    assert first_pairs(None) == [(0.0, 0.0), (0.0, 0.25), (0.0, 0.5)] + first_pairs(None)[3:]
    assert first_pairs(1) == first_pairs(1)
    assert first_pairs(1) != first_pairs(2)
    assert first_pairs(np.random.default_rng(1)) == first_pairs(1)
    assert len(set(first_pairs(1))) == 12  # untried arms first, in the drawn order


def test_public_name():
    assert fairkernels.OnlineThresholdOptimizer is OnlineThresholdOptimizer


def test_compas_example_runs(monkeypatch, tmp_path):
    """examples/online_compas.py end to end on the real data (a short stream)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("FAIRKERNELS_DATA_DIR", root / ".." / "shared" / "datasets"))
    if not (data / "compas-scores-two-years.csv").is_file():
        pytest.skip(f"the COMPAS file is not in {data}")
    pytest.importorskip("sklearn")
    env = dict(os.environ, FAIRKERNELS_DATA_DIR=str(data), FAIRKERNELS_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, str(root / "examples" / "online_compas.py"), "--rounds", "200",
                          "--batch", "300", "--grid", "5"], env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 11 and lines[0].startswith("round    20: thresholds Caucasian")
    assert lines[-1].startswith("last 20% of rounds: mean reward 0.")
