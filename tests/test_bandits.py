"""The bandits kernels against the numpy reference, the policies, and the fused episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fairkernels
from bandits_reference import ReferenceBounds
from fairkernels import _core
from fairkernels.bandits import OFS, UCB, EnvTable, FixedThreshold, GridBounds, PrimalDual, run_episodes

BOUNDS = ["ucb1", "hoeffding", "bernstein"]
RULES = ["ofs", "ucb", "primal_dual"]


def random_stream(B, K, M, rounds, rng, weight=50.0, low=-0.6, high=0.4):
    for _ in range(rounds):
        arms = rng.integers(0, K, size=B)
        rewards = rng.random(B)
        residuals = rng.uniform(low, high, size=(B, M))
        weights = rng.integers(1, int(weight) + 1, size=B).astype(float)
        yield arms, rewards, residuals, weights


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("M", [0, 1, 2])
@pytest.mark.parametrize("K", [1, 7])
@pytest.mark.parametrize("B", [1, 5])
def test_kernels_match_reference(bound, M, K, B):
    rng = np.random.default_rng(1000 * K + 10 * M + B)
    horizon = 5000.0 if bound != "ucb1" else None
    state = GridBounds(B, K, M, bound=bound, horizon=horizon)
    ref = ReferenceBounds(B, K, M, bound=bound, horizon=horizon or 0.0)
    lambdas = rng.random((B, M)) * 3
    for step, (arms, rewards, residuals, weights) in enumerate(random_stream(B, K, M, 12, rng)):
        for rule in RULES:
            expected = ref.select(rule, lambdas)
            got = state.select(rule, lambdas if rule == "primal_dual" else None)
            np.testing.assert_array_equal(got, expected, err_msg=f"{rule} at step {step}")
        ucb, lcb = state.bounds()
        ref_ucb, ref_lcb = ref.bounds()
        np.testing.assert_allclose(ucb, ref_ucb, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lcb, ref_lcb, rtol=1e-12, atol=1e-12)
        weight = weights if step % 2 else 20.0
        state.update(arms, rewards, residuals if M else None, weight=weight)
        ref.update(arms, rewards, residuals, weight)
    np.testing.assert_allclose(state.counts, ref.count)
    np.testing.assert_allclose(state.total, ref.total)


def test_untried_arms_first_lowest_index():
    state = GridBounds(2, 5, 1)
    for expected in range(5):
        arms = state.select("ofs")
        np.testing.assert_array_equal(arms, [expected, expected])
        state.update(arms, np.array([0.9, 0.1]), np.array([[0.5], [-0.5]]), weight=10)
    # A learner with arm 3 untried goes back to it before anything else.
    state = GridBounds(1, 5, 1)
    state.update(np.array([0]), np.array([1.0]), np.array([[-1.0]]), weight=1e6)
    for rule in RULES:
        assert int(state.select(rule, np.ones((1, 1)))[0]) == 1


def _fill(state, values):
    """Plays every arm once with the given (reward, residual...) rows and a large weight."""
    K = state.n_arms
    for k in range(K):
        r, *h = values[k]
        state.update(np.array([k]), np.array([r]), np.array([h]) if h else None, weight=1e9)


def test_ofs_no_feasible_arm_takes_least_violation():
    state = GridBounds(1, 4, 2)
    _fill(state, [(0.9, 0.5, 0.2), (0.8, 0.1, 0.05), (0.3, 0.9, 0.0), (0.7, 0.05, 0.4)])
    assert int(state.select("ofs")[0]) == 1  # violations ~0.7, 0.15, 0.9, 0.45
    assert int(state.select("ucb")[0]) == 0


def test_ofs_all_feasible_is_ucb_and_ties_lowest_index():
    state = GridBounds(1, 4, 1)
    _fill(state, [(0.5, -0.5), (0.8, -0.5), (0.8, -0.5), (0.2, -0.5)])
    assert int(state.select("ofs")[0]) == 1
    assert int(state.select("ucb")[0]) == 1
    # Among feasible arms only: the best arm (2) infeasible, so 1 wins the tie with 3.
    state = GridBounds(1, 4, 1)
    _fill(state, [(0.1, -0.5), (0.6, -0.5), (0.9, 0.5), (0.6, -0.5)])
    assert int(state.select("ofs")[0]) == 1
    assert int(state.select("ucb")[0]) == 2


def test_primal_dual_multipliers():
    pd = PrimalDual(2, 3, 1, eta=0.5)
    for k in range(3):
        pd.update(np.array([k, k]), np.array([0.5 + 0.1 * k] * 2), np.array([[0.2 * k - 0.1]] * 2), weight=1e9)
    # lambda = max(0, 0 - 0.05) -> 0, then +0.05, then +0.15
    np.testing.assert_allclose(pd.lambdas, [[0.2], [0.2]])
    assert list(pd.select()) == [2, 2]
    pd.state.update(np.array([0, 0]), np.array([0.5, 0.5]), np.array([[-0.1], [-0.1]]), weight=1e9)
    assert list(PrimalDual(1, 3, 1, eta=1.0).select()) == [0]
    with pytest.raises(ValueError, match="eta or n_rounds"):
        PrimalDual(1, 3, 1)
    assert PrimalDual(1, 3, 1, n_rounds=100).eta == pytest.approx(0.1)


def test_counts_in_individuals_rule_out_infeasible_arm():
    """With weight = n the residual radius shrinks like 1/sqrt(n * rounds): OFS must rule out
    an arm that is infeasible by 0.05 after a few hundred rounds, unlike counts in rounds."""
    rng = np.random.default_rng(0)
    truth_r = np.array([0.5, 0.6])
    truth_h = np.array([-0.05, 0.05])

    def run(weight):
        policy = OFS(1, 2, 1)
        plays = np.zeros(2)
        for _ in range(2000):
            k = int(policy.select()[0])
            plays[k] += 1
            noise = rng.normal(0, 0.3 / math.sqrt(weight))
            policy.update(np.array([k]), np.array([truth_r[k]]), np.clip([[truth_h[k] + noise]], -1, 1), weight=weight)
        return plays

    assert run(2000.0)[1] < 100
    assert run(1.0)[1] > 1000  # counts in rounds: never ruled out, OFS behaves like UCB


def test_invalid_observations_are_clear_errors_and_leave_state():
    state = GridBounds(3, 4, 1)
    good = (np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]), np.zeros((3, 1)))
    cases = [
        ((np.array([0, 4, 2]),) + good[1:], "arms: chosen arm out of range"),
        ((np.array([0, -1, 2]),) + good[1:], "arms: chosen arm out of range"),
        ((good[0], np.array([0.1, np.nan, 0.3]), good[2]), "rewards"),
        ((good[0], np.array([0.1, 1.5, 0.3]), good[2]), "rewards"),
        ((good[0], good[1], np.array([[0.0], [np.inf], [0.0]])), "residuals"),
        ((good[0], good[1], np.array([[0.0], [0.0], [-3.0]])), "residuals"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            state.update(*args, weight=10)
    for weight in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="weight"):
            state.update(*good, weight=weight)
    assert float(state.counts.sum()) == 0.0
    with pytest.raises(ValueError, match="arms must have shape"):
        state.update(np.array([0, 1]), good[1], good[2])
    with pytest.raises(TypeError, match="arms must have an integer dtype"):
        state.update(np.array([0.0, 1.0, 2.0]), good[1], good[2])
    with pytest.raises(ValueError, match="residuals are required"):
        state.update(*good[:2])
    with pytest.raises(ValueError, match="rule must be one of"):
        state.select("greedy")
    with pytest.raises(ValueError, match="bound must be one of"):
        GridBounds(1, 3, 1, bound="kl")
    with pytest.raises(ValueError, match="delta"):
        GridBounds(1, 3, 1, delta=1.5)
    arms, rewards, residuals = good
    copies = arms.copy(), rewards.copy(), residuals.copy()
    state.update(arms.astype(np.int32), rewards.astype(np.float32), residuals, weight=10)
    for original, copy in zip((arms, rewards, residuals), copies):
        np.testing.assert_array_equal(original, copy)


def test_torch_cpu_state_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a, b = OFS(6, 9, 2), OFS(6, 9, 2, like=torch.zeros(1))
    for arms, rewards, residuals, weights in random_stream(6, 9, 2, 15, rng):
        np.testing.assert_array_equal(a.select(), b.select().numpy())
        a.update(arms, rewards, residuals, weight=weights)
        b.update(torch.from_numpy(arms), torch.from_numpy(rewards), torch.from_numpy(residuals),
                 weight=torch.from_numpy(weights))
    np.testing.assert_array_equal(a.state.means, b.state.means.numpy())
    with pytest.raises(ValueError, match="pass all arrays from one library"):
        b.update(arms, rewards, residuals)


def test_fixed_threshold_and_policy_interface():
    fixed = FixedThreshold(3, 11, threshold=0.42)
    np.testing.assert_array_equal(fixed.select(), [4, 4, 4])
    assert fixed.grid[fixed.select()][0] == pytest.approx(0.4)
    ucb = UCB(2, [0.2, 0.5, 0.9], 1)
    np.testing.assert_array_equal(ucb.grid, [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="exactly one of arm and threshold"):
        FixedThreshold(1, 5)


def test_philox_known_answers():
    # Random123 known-answer vectors for philox4x32-10.
    assert _core.philox4x32_10(0, 0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert _core.philox4x32_10(*([0xFFFFFFFF] * 6)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert _core.philox4x32_10(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0) == (
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


@pytest.mark.parametrize("n,p", [(2000, 0.5), (2000, 0.002), (900, 0.97), (7, 0.3), (40, 0.25)])
def test_binomial_sampler_moments(n, p):
    x = np.array(_core.binomial_samples(n, p, 3, 40000))
    assert x.min() >= 0 and x.max() <= n and np.all(x == np.round(x))
    var = n * p * (1 - p)
    assert abs(x.mean() - n * p) < 5 * math.sqrt(var / len(x))
    assert abs(x.var() / var - 1) < 0.05


def synthetic_table(K=21, eps=0.1):
    from fairkernels.envs import synthetic

    return synthetic.make_table(grid=K, eps=eps)


def test_episode_deterministic_and_streams_independent():
    env = synthetic_table()
    rules = ["ofs", "ucb", "primal_dual", "fixed"]
    a = run_episodes(env, rules, fixed_arms=[0, 0, 0, 10], n_rounds=300, seed=7, n_buckets=10)
    b = run_episodes(env, rules, fixed_arms=[0, 0, 0, 10], n_rounds=300, seed=7, n_buckets=10)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.pulls, b.pulls)
    assert a.pulls.sum(axis=1).tolist() == [300] * 4
    assert a.bucket_rounds.sum() == 300
    # Learner 0 alone, same stream id: same trajectory whatever the others do.
    c = run_episodes(env, ["ofs"], n_rounds=300, seed=7, n_buckets=10, stream_ids=[0])
    np.testing.assert_array_equal(c.reward[0], a.reward[0])
    d = run_episodes(env, ["ofs"], n_rounds=300, seed=8, n_buckets=10)
    assert not np.array_equal(d.reward[0], a.reward[0])
    # Fixed threshold: rewards average to the table's expectation at the steady share.
    fixed = run_episodes(env, ["fixed"] * 8, fixed_arms=[10] * 8, n_rounds=400, seed=1, n_buckets=4)
    expected = env.expected(env.steady_share()[10])
    assert fixed.reward[:, 1:].sum() / (8 * 300) == pytest.approx(expected["reward"][10], abs=0.003)
    assert fixed.residual[:, 1:, 0].sum() / (8 * 300) == pytest.approx(expected["residual"][0, 10], abs=0.005)


def test_episode_errors():
    env = synthetic_table()
    with pytest.raises(ValueError, match="rules must be one of"):
        run_episodes(env, ["greedy"], n_rounds=10)
    with pytest.raises(ValueError, match="fixed_arms: arm out of range"):
        run_episodes(env, ["fixed"], fixed_arms=[99], n_rounds=10)
    with pytest.raises(ValueError, match="n_buckets"):
        run_episodes(env, ["ofs"], n_rounds=10, n_buckets=11)
    with pytest.raises(ValueError, match="tpr must be"):
        EnvTable(np.linspace(0, 1, 3), np.full((2, 3), 1.5), np.zeros((2, 3)), [0.5, 0.5])


def test_ofs_violates_less_than_ucb_on_synthetic():
    """End to end on the synthetic default (shorter horizon): OFS's cumulative violation is
    clearly below UCB's, and its late reward is at least the best feasible fixed threshold's minus 0.01 and below UCB's.
    (At T = 2000 OFS still probes the arms just past the boundary, whose margin is ~0.003.)"""
    env = synthetic_table(K=51)
    B = 4
    traces = run_episodes(env, ["ofs"] * B + ["ucb"] * B, n_rounds=2000, seed=3, n_buckets=10)
    violation = traces.violation.sum(axis=1)
    assert violation[:B].max() < 0.8 * violation[B:].min()
    expected = env.expected(None)
    steady = env.expected_steady()
    feasible = steady["residual"].max(axis=0) <= 0
    oracle_reward = steady["reward"][feasible].max()
    late = traces.reward[:, -2:].sum(axis=1) / traces.bucket_rounds[-2:].sum()
    assert late[:B].mean() > oracle_reward - 0.01
    assert late[:B].mean() < late[B:].mean()  # it pays for the constraint
    assert expected["reward"].shape == (51,)


@pytest.mark.cuda
def test_cuda_episode_matches_cpu():
    torch = pytest.importorskip("torch")
    env = synthetic_table(K=31)
    rules = ["ofs", "ucb", "primal_dual", "fixed"] * 8
    kwargs = dict(fixed_arms=[12] * 32, n_rounds=500, seed=11, n_buckets=20)
    cpu = run_episodes(env, rules, **kwargs)
    gpu = run_episodes(env, rules, like=torch.zeros(0, device="cuda"), **kwargs)
    np.testing.assert_array_equal(gpu.pulls, cpu.pulls)
    np.testing.assert_allclose(gpu.reward, cpu.reward, rtol=0, atol=1e-9)
    np.testing.assert_allclose(gpu.final_share, cpu.final_share, rtol=0, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("bound", BOUNDS)
def test_cuda_kernels_match_cpu(bound):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    B, K, M = 64, 17, 2
    cpu = GridBounds(B, K, M, bound=bound, horizon=1e6)
    gpu = GridBounds(B, K, M, bound=bound, horizon=1e6, like=torch.zeros(1, device="cuda"))
    lambdas = rng.random((B, M))
    for arms, rewards, residuals, weights in random_stream(B, K, M, 20, rng):
        for rule in RULES:
            lam = lambdas if rule == "primal_dual" else None
            got = gpu.select(rule, None if lam is None else torch.from_numpy(lam).cuda())
            np.testing.assert_array_equal(got.cpu().numpy(), cpu.select(rule, lam))
        cpu.update(arms, rewards, residuals, weight=weights)
        gpu.update(*(torch.from_numpy(x).cuda() for x in (arms, rewards, residuals)),
                   weight=torch.from_numpy(weights).cuda())
    for got, want in zip(gpu.bounds(), cpu.bounds()):
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="arms: chosen arm out of range"):
        gpu.update(torch.full((B,), K, device="cuda"), torch.zeros(B, device="cuda", dtype=torch.float64),
                   torch.zeros((B, M), device="cuda", dtype=torch.float64))


def test_public_names():
    assert fairkernels.bandits.OFS is OFS


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("rule", ["ofs", "ucb", "primal_dual"])
def test_fused_episode_learner_matches_policy_replay(bound, rule):
    """The fused episode's learner makes the choices of the standalone policy: with one bucket
    per round the traces hold each round's reward and residual, and replaying them through
    GridBounds / PrimalDual (choosing with select) reproduces the episode's pulls exactly."""
    env = synthetic_table(K=11)
    T, n = 300, env.cohort
    traces = run_episodes(env, [rule], n_rounds=T, seed=5, n_buckets=T, bound=bound, eta=0.3)
    kwargs = dict(bound=bound, horizon=float(T * n))
    policy = {"ofs": OFS, "ucb": UCB}.get(rule)
    learner = policy(1, 11, 1, **kwargs) if policy else PrimalDual(1, 11, 1, eta=0.3, **kwargs)
    pulls = np.zeros(11)
    for t in range(T):
        arm = learner.select()
        pulls[arm[0]] += 1
        learner.update(arm, traces.reward[:, t], traces.residual[:, t, :], weight=float(n))
    np.testing.assert_array_equal(pulls, traces.pulls[0])
    assert np.count_nonzero(pulls) > 1


# ---------------------------------------------------------------------------------------------
# torch custom ops: a policy whose state lives in torch compiles with fullgraph=True


def _policy_step(policy, rewards, residuals):
    arms = policy.select()
    policy.update(arms, rewards, residuals, 10.0)
    return arms


@pytest.mark.parametrize("policy_class", [OFS, PrimalDual])
def test_torch_compile_fullgraph_policy_step_matches_eager(policy_class):
    torch = pytest.importorskip("torch")
    B, K, M = 8, 5, 2
    options = dict(eta=0.2) if policy_class is PrimalDual else {}
    compiled_policy = policy_class(B, K, M, like=torch.zeros(0), **options)
    eager_policy = policy_class(B, K, M, like=torch.zeros(0), **options)
    rng = np.random.default_rng(0)
    step = torch.compile(_policy_step, fullgraph=True, backend="aot_eager")
    for _ in range(6):
        rewards = torch.from_numpy(rng.random(B))
        residuals = torch.from_numpy(rng.uniform(-1, 1, (B, M)))
        assert torch.equal(step(compiled_policy, rewards, residuals), _policy_step(eager_policy, rewards, residuals))
    for name, value in compiled_policy.state.state_arrays.items():
        assert torch.equal(value, eager_policy.state.state_arrays[name]), name
    if policy_class is PrimalDual:
        assert torch.equal(compiled_policy.lambdas, eager_policy.lambdas)


def test_bandit_torch_opcheck():
    torch = pytest.importorskip("torch")
    from fairkernels import _torch_ops
    from fairkernels.bandits.policies import STATE_FIELDS

    B, K, M = 6, 4, 2
    policy = OFS(B, K, M, like=torch.zeros(0))
    rng = np.random.default_rng(1)
    rewards, residuals = torch.from_numpy(rng.random(B)), torch.from_numpy(rng.uniform(-1, 1, (B, M)))
    policy.update(policy.select(), rewards, residuals, 5.0)
    state = [policy.state.state_arrays[name] for name in STATE_FIELDS]
    for want_bounds in (False, True):
        torch.library.opcheck(_torch_ops.bandit_select_op, (*state, M, "ofs", "bernstein", 2.0, 0.05, 0.0, None,
                                                            want_bounds))
    arms = torch.arange(B, dtype=torch.int64) % K
    torch.library.opcheck(_torch_ops.bandit_update_op, (*[s.clone() for s in state], M, arms, rewards, residuals,
                                                        None, 3.0, None, None))


# ---------------------------------------------------------------------------------------------
# Per-group thresholds over a product grid


def test_product_grid_matches_reference_and_policies_use_it():
    from bandits_reference import reference_product_grid
    from fairkernels.bandits import make_grid, product_grid

    a, b = [0.1, 0.5, 0.9], [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_array_equal(product_grid(a, b), reference_product_grid(a, b))
    np.testing.assert_array_equal(make_grid(21, per_group=True), reference_product_grid(*[np.linspace(0, 1, 21)] * 2))
    for policy in (OFS(3, 21, 1, per_group=True), UCB(3, 21, 1, per_group=True),
                   PrimalDual(3, 21, 1, per_group=True, eta=0.1)):
        assert policy.per_group and policy.grid.shape == (441, 2) and policy.state.n_arms == 441
        assert policy.grid[policy.select()].shape == (3, 2)
    pairs = product_grid(a, b)
    explicit = OFS(2, pairs, 1)  # a [K, 2] grid is per-group without the flag
    assert explicit.per_group and explicit.grid.shape == (12, 2)
    assert not OFS(2, 21, 1).per_group
    fixed = FixedThreshold(2, pairs, threshold=(0.45, 0.3))
    np.testing.assert_array_equal(fixed.grid[fixed.select()], [[0.5, 0.25]] * 2)
    with pytest.raises(TypeError, match="threshold must be a pair"):
        FixedThreshold(2, pairs, threshold=0.4)
    with pytest.raises(TypeError, match="per_group must be a bool"):
        OFS(2, 21, 1, per_group=1)
    with pytest.raises(ValueError, match=r"\[K, 2\] array"):
        OFS(2, np.zeros((4, 3)), 1)
    with pytest.raises(ValueError, match="two 1-D grids"):
        product_grid(pairs, a)


@pytest.mark.parametrize("bound", BOUNDS)
def test_kernels_match_reference_on_a_product_grid(bound):
    """The update/select kernels over the 441 arms of a 21 x 21 grid, against the reference."""
    B, M = 3, 2
    K = 441
    rng = np.random.default_rng(15)
    horizon = 1e6 if bound != "ucb1" else None
    state = GridBounds(B, 21, M, bound=bound, horizon=horizon, per_group=True)
    ref = ReferenceBounds(B, K, M, bound=bound, horizon=horizon or 0.0)
    lambdas = rng.random((B, M)) * 3
    # Every arm tried at least once (so the bounds are finite), then random observations.
    for step in range(K + 6):
        arms = np.full(B, step) if step < K else rng.integers(0, K, B)
        rewards, residuals = rng.random(B), rng.uniform(-0.6, 0.4, (B, M))
        weights = rng.integers(1, 60, B).astype(float)
        state.update(arms, rewards, residuals, weight=weights)
        ref.update(arms, rewards, residuals, weights)
        if step >= K - 1:
            for rule in RULES:
                got = state.select(rule, lambdas if rule == "primal_dual" else None)
                np.testing.assert_array_equal(got, ref.select(rule, lambdas), err_msg=f"{rule} at {step}")
    ucb, lcb = state.bounds()
    ref_ucb, ref_lcb = ref.bounds()
    np.testing.assert_allclose(ucb, ref_ucb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lcb, ref_lcb, rtol=1e-12, atol=1e-12)


def test_per_group_episode_diagonal_is_the_shared_threshold():
    """Arm (k, k) of the product grid is the shared threshold k: same draws, same trajectory."""
    from fairkernels.bandits import pair_arms

    env = synthetic_table(K=11)
    shared = run_episodes(env, ["fixed"] * 11, fixed_arms=list(range(11)), n_rounds=150, seed=4, n_buckets=15)
    diagonal = pair_arms(11, np.arange(11), np.arange(11))
    pairs = run_episodes(env, ["fixed"] * 11, fixed_arms=diagonal, n_rounds=150, seed=4, n_buckets=15, per_group=True)
    for field in ("reward", "violation", "residual", "final_share"):
        np.testing.assert_array_equal(getattr(pairs, field), getattr(shared, field))
    assert pairs.pulls.shape == (11, 121)
    np.testing.assert_array_equal(pairs.pulls[np.arange(11), diagonal], np.full(11, 150.0))


def test_per_group_fixed_pairs_average_to_the_reference_expectation():
    from bandits_reference import reference_pair_steady
    from fairkernels.bandits import pair_arms

    env = synthetic_table(K=11)
    chosen = [(2, 7), (8, 3), (5, 5), (0, 10)]
    arms = [int(pair_arms(11, a, b)) for a, b in chosen]
    B = 6
    traces = run_episodes(env, ["fixed"] * (B * len(chosen)), fixed_arms=np.repeat(arms, B), n_rounds=500, seed=2,
                          n_buckets=5, per_group=True)
    late = traces.bucket_rounds[1:].sum()
    for i, (k_a, k_b) in enumerate(chosen):
        rows = slice(i * B, (i + 1) * B)
        reward, residual, share = reference_pair_steady(env.tpr, env.fpr, env.base_rate, k_a, k_b, env.p0,
                                                        env.kappa, env.cost, env.eps)
        assert traces.reward[rows, 1:].sum() / (B * late) == pytest.approx(reward, abs=0.003), (k_a, k_b)
        assert traces.residual[rows, 1:, 0].sum() / (B * late) == pytest.approx(residual, abs=0.006), (k_a, k_b)
        assert traces.final_share[rows].mean() == pytest.approx(share, abs=0.01), (k_a, k_b)


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("rule", ["ofs", "ucb", "primal_dual"])
def test_per_group_fused_episode_matches_policy_replay(bound, rule):
    """As test_fused_episode_learner_matches_policy_replay, on the 9 x 9 product grid."""
    env = synthetic_table(K=9)
    T, n = 250, env.cohort
    traces = run_episodes(env, [rule], n_rounds=T, seed=6, n_buckets=T, bound=bound, eta=0.3, per_group=True)
    kwargs = dict(bound=bound, horizon=float(T * n), per_group=True)
    policy = {"ofs": OFS, "ucb": UCB}.get(rule)
    learner = policy(1, env.grid, 1, **kwargs) if policy else PrimalDual(1, env.grid, 1, eta=0.3, **kwargs)
    pulls = np.zeros(81)
    for t in range(T):
        arm = learner.select()
        pulls[arm[0]] += 1
        learner.update(arm, traces.reward[:, t], traces.residual[:, t, :], weight=float(n))
    np.testing.assert_array_equal(pulls, traces.pulls[0])
    assert np.count_nonzero(pulls) > 81 // 2


def test_per_group_episode_with_the_service_rate_constraint_matches_policy_replay():
    """M = 2 (DP and the service rate rho_min - A) on the product grid."""
    from fairkernels.envs import synthetic

    env = synthetic.make_table(grid=7, rho_min=0.45)
    T, n = 200, env.cohort
    traces = run_episodes(env, ["ofs"], n_rounds=T, seed=9, n_buckets=T, per_group=True)
    learner = OFS(1, env.grid, 2, horizon=float(T * n), per_group=True)
    pulls = np.zeros(49)
    for t in range(T):
        arm = learner.select()
        pulls[arm[0]] += 1
        learner.update(arm, traces.reward[:, t], traces.residual[:, t, :], weight=float(n))
    np.testing.assert_array_equal(pulls, traces.pulls[0])
    assert traces.residual.shape == (1, T, 2)


def test_per_group_episode_errors():
    env = synthetic_table(K=5)
    with pytest.raises(ValueError, match=r"fixed_arms: arm out of range \[0, 25\)"):
        run_episodes(env, ["fixed"], fixed_arms=[25], n_rounds=10, per_group=True)
    with pytest.raises(TypeError, match="per_group must be a bool"):
        run_episodes(env, ["ofs"], n_rounds=10, per_group="yes")
    from fairkernels.bandits import pair_arms

    with pytest.raises(ValueError, match="pair_arms: grid index out of range"):
        pair_arms(5, 5, 0)
    # The kernel's own checks of the struct (a caller that fills it by hand).
    table = _core.EnvTable()
    accept = np.full((2, 3), 0.5)
    table.n_arms, table.n_columns = 4, 3
    table.accept = table.precision = accept.ctypes.data
    args = _core.EpisodeArgs()
    args.n_learners, args.n_rounds = 0, 1
    with pytest.raises(ValueError, match="shared thresholds need one column per arm"):
        _core.bandit_episode(table, args)
    columns = np.array([[0, 1, 2, 3], [0, 0, 0, 0]], dtype=np.int64)
    table.columns = columns.ctypes.data
    with pytest.raises(ValueError, match="arm column out of range"):
        _core.bandit_episode(table, args)


@pytest.mark.cuda
def test_cuda_per_group_episode_matches_cpu():
    torch = pytest.importorskip("torch")
    env = synthetic_table(K=13)
    rules = ["ofs", "ucb", "primal_dual", "fixed"] * 8
    kwargs = dict(fixed_arms=[40] * 32, n_rounds=400, seed=12, n_buckets=20, per_group=True)
    cpu = run_episodes(env, rules, **kwargs)
    gpu = run_episodes(env, rules, like=torch.zeros(0, device="cuda"), **kwargs)
    np.testing.assert_array_equal(gpu.pulls, cpu.pulls)
    np.testing.assert_allclose(gpu.reward, cpu.reward, rtol=0, atol=1e-9)
    np.testing.assert_allclose(gpu.final_share, cpu.final_share, rtol=0, atol=1e-12)
