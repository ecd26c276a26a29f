"""Grid confidence bounds / OFS: fairkernels against the fastest numpy a user would write.

  round    one round (update + select, rule "ofs", ucb1) for B = 4,096 learners, K = 101, M = 2;
           baseline: vectorised numpy keeping running means and cached 1/sqrt(counts) in
           preallocated buffers (NumpyOFS below).
  episode  the fused synthetic episode, B = 1,000 OFS learners, T = 10,000, K = 51, n = 2,000;
           baseline: the same episode driven from a Python loop with numpy per round
           (the same five count-based Binomial draws per round, NumpyOFS for the learner).  The loop is timed on
           LOOP_ROUNDS rounds and scaled to T (it costs the same every round).
  round-per-group
           one round for B = 4,096 learners over the 441 arms of a 21 x 21 per-group grid,
           M = 2; same baseline (NumpyOFS: the kernels do not care what an arm means).
  episode-per-group
           the fused synthetic episode per learner-round on the 21 x 21 product grid against
           the shared-threshold episode (K = 51, the paper's grid; and K = 441, as many arms
           as the product grid), B = 200 OFS learners, T = 2,000.
  sampler  the episode's floor: the environment's five Binomial draws per learner-round alone
           (Philox4x32-10 + BTRS / inversion, the same env_round of cpp/bandits_core.h), each
           learner spending on each arm as many rounds as its OFS episode did (so drawing with
           the episode's parameters), no bounds / selection / traces (cpp/bandits_sampler.cc), on one
           core ("serial") and over the episode's threads
           ("parallel"; the same learner partition).  episode time / sampler time = the
           episode's learner-rounds per second as a fraction of the sampler's.

    pytest bench/bench_bandits.py --benchmark-json=out.json    # pytest-benchmark
    python bench/bench_bandits.py                                # prints the ratios directly
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

from cuda_timing import synchronized
from fairkernels import _core
from fairkernels.bandits import GridBounds, run_episodes
from fairkernels.bandits.episodes import kernel_table
from fairkernels.envs.synthetic import make_table

ROUND_B, ROUND_K, ROUND_M = 4096, 101, 2
EP_B, EP_T, EP_K, EP_N = 1000, 10_000, 51, 2000
LOOP_ROUNDS = 200
PG_B, PG_GRID, PG_M = 4096, 21, 2  # per-group round: K = 21 * 21 = 441 arms
PG_EP_B, PG_EP_T = 200, 2000
PG_EPISODES = {"fairkernels": (PG_GRID, True), "shared_K51": (51, False), "shared_K441": (PG_GRID ** 2, False)}


class NumpyOFS:
    """OFS with ucb1 in vectorised numpy: running means, cached 1/sqrt(count) (inf while
    untried, so untried arms get infinite bounds without a branch), preallocated buffers."""

    def __init__(self, B: int, K: int, M: int, alpha: float = 2.0):
        self.B, self.K, self.M, self.alpha = B, K, M, alpha
        self.rows = np.arange(B)
        self.count = np.zeros((B, K))
        self.inv = np.full((B, K), np.inf)
        self.mean_r = np.zeros((B, K))
        self.mean_h = np.zeros((M, B, K))
        self.total = np.zeros(B)
        self.rad = np.empty((B, K))
        self.ucb = np.empty((B, K))
        self.lcb = np.empty((M, B, K))
        self.viol = np.empty((B, K))

    def update(self, arms, rewards, residuals, weight):
        idx = (self.rows, arms)
        c = self.count[idx] + weight
        self.count[idx] = c
        step = weight / c
        self.mean_r[idx] += (rewards - self.mean_r[idx]) * step
        for j in range(self.M):
            m = self.mean_h[j]
            m[idx] += (residuals[:, j] - m[idx]) * step
        self.inv[idx] = 1.0 / np.sqrt(c)
        self.total += weight

    def select(self):
        factor = np.sqrt(self.alpha * np.log(np.maximum(self.total, 2.0)))
        np.multiply(self.inv, factor[:, None], out=self.rad)
        np.add(self.mean_r, self.rad, out=self.ucb)
        self.viol.fill(0.0)
        for j in range(self.M):
            lcb = self.lcb[j]
            np.multiply(self.rad, 2.0, out=lcb)
            np.subtract(self.mean_h[j], lcb, out=lcb)
            np.maximum(lcb, 0.0, out=lcb)
            self.viol += lcb
        feasible = self.viol == 0.0
        score = np.where(feasible, self.ucb, -np.inf)
        best = score.argmax(axis=1)
        return np.where(feasible.any(axis=1), best, self.viol.argmin(axis=1))


def round_inputs(B=ROUND_B, K=ROUND_K, M=ROUND_M, warm_rounds=3 * ROUND_K):
    """States after warm_rounds rounds of random observations (every arm tried)."""
    rng = np.random.default_rng(0)
    ours, base = GridBounds(B, K, M), NumpyOFS(B, K, M)
    for t in range(warm_rounds):
        arms = np.full(B, t % K, dtype=np.int64) if t < K else rng.integers(0, K, B)
        r, h = rng.random(B), rng.uniform(-0.3, 0.2, (B, M))
        ours.update(arms, r, h, weight=2000.0)
        base.update(arms, r, h, 2000.0)
    obs = (rng.integers(0, K, B), rng.random(B), rng.uniform(-0.3, 0.2, (B, M)))
    return ours, base, obs


def per_group_round_inputs(B=PG_B):
    """round_inputs over the product grid: GridBounds(per_group=True) and NumpyOFS on K = 441."""
    K = PG_GRID ** 2
    rng = np.random.default_rng(1)
    ours, base = GridBounds(B, PG_GRID, PG_M, per_group=True), NumpyOFS(B, K, PG_M)
    for t in range(K + 20):
        arms = np.full(B, t, dtype=np.int64) if t < K else rng.integers(0, K, B)
        r, h = rng.random(B), rng.uniform(-0.3, 0.2, (B, PG_M))
        ours.update(arms, r, h, weight=2000.0)
        base.update(arms, r, h, 2000.0)
    obs = (rng.integers(0, K, B), rng.random(B), rng.uniform(-0.3, 0.2, (B, PG_M)))
    return ours, base, obs


def per_group_episode(impl, B=PG_EP_B, T=PG_EP_T):
    grid, per_group = PG_EPISODES[impl]
    env = make_table(grid=grid, cohort=EP_N)
    return run_episodes(env, ["ofs"] * B, n_rounds=T, seed=0, n_buckets=10, per_group=per_group)


def fk_round(state, obs):
    state.update(*obs, weight=2000.0)
    return state.select("ofs")


def numpy_round(state, obs):
    state.update(*obs, 2000.0)
    return state.select()


def python_loop_episode(env, B, T, seed=0):
    """The synthetic episode from a Python loop: numpy per round, count-based draws."""
    rng = np.random.default_rng(seed)
    learner = NumpyOFS(B, env.n_arms, 1)
    n = env.cohort
    accept, precision = env.accept_rate, env.precision
    p = np.full(B, env.p0)
    logit_p0 = math.log(env.p0 / (1 - env.p0))
    reward_sum = np.zeros(B)
    violation_sum = np.zeros(B)
    for _ in range(T):
        arms = learner.select()
        na = rng.binomial(n, p)
        group_n = (na, n - na)
        accepted, tp, fp = [], 0, 0
        for g in (0, 1):
            acc = rng.binomial(group_n[g], accept[g, arms])
            tp_g = rng.binomial(acc, precision[g, arms])
            accepted.append(np.where(group_n[g] > 0, acc / np.maximum(group_n[g], 1), 0.0))
            tp, fp = tp + tp_g, fp + acc - tp_g
        reward = (tp - env.cost * fp + env.cost * n) / ((1 + env.cost) * n)
        gap = accepted[0] - accepted[1]
        residual = np.abs(gap) - env.eps
        learner.update(arms, reward, residual[:, None], float(n))
        p = (1 - env.beta) * p + env.beta / (1 + np.exp(-(logit_p0 + env.kappa * gap)))
        reward_sum += reward
        violation_sum += np.maximum(residual, 0)
    return reward_sum, violation_sum


def fused_episode(env, B, T, seed=0):
    return run_episodes(env, ["ofs"] * B, n_rounds=T, seed=seed, n_buckets=min(100, T))


def sampler_rounds(env, pulls, seed=0, parallel=True):
    """The episode's environment draws alone (5 Binomial draws per learner-round), learner b
    spending pulls[b, k] rounds on arm k."""
    pulls = np.ascontiguousarray(pulls, dtype=np.int64)
    assert pulls.ndim == 2 and pulls.shape[1] == env.n_arms
    table, held = kernel_table(env)  # held: the table's arrays, alive during the call
    return _core.sampler_rounds(table, pulls.ctypes.data, len(pulls), seed, parallel)


def tag(benchmark, case, variant, impl):
    benchmark.group = f"bandits-{case}"
    benchmark.extra_info.update(family="bandits", case=case, variant=variant, impl=impl, policy="fresh")


@pytest.fixture(scope="module")
def round_data():
    return round_inputs()


def test_same_choices(round_data):
    ours, base, obs = round_inputs(B=256, K=ROUND_K, M=ROUND_M)
    np.testing.assert_array_equal(fk_round(ours, obs), numpy_round(base, obs))


@pytest.fixture(scope="module")
def per_group_round_data():
    return per_group_round_inputs()


def test_same_choices_per_group():
    ours, base, obs = per_group_round_inputs(B=128)
    np.testing.assert_array_equal(fk_round(ours, obs), numpy_round(base, obs))


@pytest.mark.parametrize("impl", ["fairkernels", "numpy"])
def test_round_per_group(benchmark, per_group_round_data, impl):
    tag(benchmark, "round-per-group", f"B{PG_B}-K{PG_GRID}x{PG_GRID}-M{PG_M}", impl)
    time_round(benchmark, per_group_round_data, impl)


@pytest.mark.parametrize("impl", list(PG_EPISODES))
def test_episode_per_group(benchmark, impl):
    """"fairkernels" is the per-group episode; the others are shared-threshold episodes."""
    tag(benchmark, "episode-per-group", f"B{PG_EP_B}-T{PG_EP_T}", impl)
    benchmark.extra_info["learner_rounds"] = PG_EP_B * PG_EP_T
    benchmark.pedantic(per_group_episode, args=(impl,), rounds=3, iterations=1)


@pytest.mark.parametrize("impl", ["fairkernels", "numpy"])
def test_round(benchmark, round_data, impl):
    tag(benchmark, "round", f"B{ROUND_B}-K{ROUND_K}-M{ROUND_M}", impl)
    time_round(benchmark, round_data, impl)


def time_round(benchmark, data, impl):
    """One update + select round of fairkernels or of the vectorised numpy baseline."""
    ours, base, obs = data
    if impl == "fairkernels":
        benchmark(fk_round, ours, obs)
    else:
        benchmark(numpy_round, base, obs)


def test_episode_fused(benchmark):
    env = make_table(grid=EP_K, cohort=EP_N)
    tag(benchmark, "episode", f"B{EP_B}-T{EP_T}-K{EP_K}", "fairkernels")
    benchmark.pedantic(fused_episode, args=(env, EP_B, EP_T), rounds=1, iterations=1)


@pytest.fixture(scope="module")
def episode_pulls():
    """The pull counts of the benchmarked OFS episode (run once, untimed): the sampler floor
    draws with the parameters the episode draws with."""
    env = make_table(grid=EP_K, cohort=EP_N)
    return env, fused_episode(env, EP_B, EP_T).pulls


def test_sampler_matches_fixed_episode():
    """The sampler floor draws exactly what a FixedThreshold episode draws (same env_round, same
    Philox streams): same total reward."""
    env = make_table(grid=EP_K, cohort=EP_N)
    arms = np.arange(64) % EP_K
    traces = run_episodes(env, ["fixed"] * 64, fixed_arms=arms, n_rounds=200, seed=3, n_buckets=1)
    pulls = np.zeros((64, EP_K), dtype=np.int64)
    pulls[np.arange(64), arms] = 200
    total = sampler_rounds(env, pulls, seed=3, parallel=False)
    assert total == pytest.approx(float(traces.reward.sum()), rel=1e-12)
    assert sampler_rounds(env, pulls, seed=3, parallel=True) == total


@pytest.mark.parametrize("impl", ["sampler_serial", "sampler_parallel"])
def test_episode_sampler_floor(benchmark, episode_pulls, impl):
    env, pulls = episode_pulls
    tag(benchmark, "episode", f"B{EP_B}-T{EP_T}-K{EP_K}", impl)
    benchmark.extra_info["draws"] = 5 * EP_B * EP_T
    benchmark.pedantic(sampler_rounds, args=(env, pulls), kwargs=dict(parallel=impl == "sampler_parallel"),
                       rounds=1, iterations=1)


def test_episode_python_loop(benchmark):
    """Timed on LOOP_ROUNDS rounds (its own case, so report.py pairs no unequal runs);
    multiply by EP_T / LOOP_ROUNDS for the episode (python bench/bench_bandits.py does)."""
    env = make_table(grid=EP_K, cohort=EP_N)
    tag(benchmark, f"episode-loop-{LOOP_ROUNDS}-rounds", f"B{EP_B}-K{EP_K}", "python_loop")
    benchmark.extra_info["rounds_timed"] = LOOP_ROUNDS
    benchmark.extra_info["scale_to_T"] = EP_T / LOOP_ROUNDS
    benchmark.pedantic(python_loop_episode, args=(env, EP_B, LOOP_ROUNDS), rounds=1, iterations=1)


# --- CUDA (run on a GPU machine by bench/gpu_check.sh): the CUDA kernels against the CPU kernels
GPU_B, GPU_T = 65_536, 200


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["fairkernels", "cpu_kernel"])
def test_cuda_episode(benchmark, impl):
    """Fused synthetic episode, B = 65,536 OFS learners (T = 200 to keep the CPU run short);
    run_episodes copies the traces back to the host in both cases."""
    import torch

    env = make_table(grid=EP_K, cohort=EP_N)
    benchmark.group = "bandits-cuda-episode"
    benchmark.extra_info.update(family="bandits-cuda", case="episode", variant=f"B{GPU_B}-T{GPU_T}-K{EP_K}",
                                impl=impl, policy="fresh")
    like = torch.zeros(0, device="cuda") if impl == "fairkernels" else None
    benchmark.pedantic(run_episodes, args=(env, ["ofs"] * GPU_B),
                       kwargs=dict(n_rounds=GPU_T, seed=0, n_buckets=10, like=like), rounds=3, iterations=1)


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["fairkernels", "cpu_kernel"])
def test_cuda_round(benchmark, impl):
    """One round (update + select) for B = 65,536, K = 101, M = 2: CUDA state vs CPU state."""
    import torch

    B, K, M = GPU_B, ROUND_K, ROUND_M
    rng = np.random.default_rng(0)
    like = torch.zeros(1, device="cuda") if impl == "fairkernels" else None
    state = GridBounds(B, K, M, like=like)
    convert = (lambda x: torch.from_numpy(x).cuda()) if like is not None else (lambda x: x)
    for t in range(K):
        state.update(convert(np.full(B, t, dtype=np.int64)), convert(rng.random(B)),
                     convert(rng.uniform(-0.3, 0.2, (B, M))), weight=2000.0)
    obs = tuple(convert(x) for x in (rng.integers(0, K, B), rng.random(B), rng.uniform(-0.3, 0.2, (B, M))))
    benchmark.group = "bandits-cuda-round"
    benchmark.extra_info.update(family="bandits-cuda", case="round", variant=f"B{B}-K{K}-M{M}", impl=impl,
                                policy="fresh")
    fn = synchronized(fk_round, state, obs) if like is not None else (lambda: fk_round(state, obs))
    benchmark(fn)


def _best_of(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import fairkernels

    print(f"fairkernels {fairkernels.__version__}, CPU threads {fairkernels.build_info()['cpu_threads']}")
    ours, base, obs = round_inputs()
    t_ours = _best_of(lambda: fk_round(ours, obs), 50)
    t_base = _best_of(lambda: numpy_round(base, obs), 20)
    print(f"round B={ROUND_B} K={ROUND_K} M={ROUND_M}: fairkernels {t_ours * 1e3:.3f} ms, numpy {t_base * 1e3:.3f} ms"
          f" -> {t_base / t_ours:.1f}x")
    env = make_table(grid=EP_K, cohort=EP_N)
    t_fused = _best_of(lambda: fused_episode(env, EP_B, EP_T), 2)
    t_loop = _best_of(lambda: python_loop_episode(env, EP_B, LOOP_ROUNDS), 2) * EP_T / LOOP_ROUNDS
    print(f"episode B={EP_B} T={EP_T} K={EP_K} n={EP_N}: fused {t_fused:.2f} s, Python loop {t_loop:.1f} s "
          f"(timed on {LOOP_ROUNDS} rounds, scaled x{EP_T // LOOP_ROUNDS}) -> {t_loop / t_fused:.0f}x")
    ours, base, obs = per_group_round_inputs()
    t_ours = _best_of(lambda: fk_round(ours, obs), 20)
    t_base = _best_of(lambda: numpy_round(base, obs), 10)
    print(f"per-group round B={PG_B} K={PG_GRID}x{PG_GRID} M={PG_M}: fairkernels {t_ours * 1e3:.3f} ms, numpy "
          f"{t_base * 1e3:.3f} ms -> {t_base / t_ours:.1f}x")
    per_round = {impl: _best_of(functools.partial(per_group_episode, impl), 2) / (PG_EP_B * PG_EP_T)
                 for impl in PG_EPISODES}
    ours_ns = per_round["fairkernels"] * 1e9
    print(f"episode per learner-round (B={PG_EP_B}, T={PG_EP_T}): per-group 21x21 {ours_ns:.0f} ns"
          + "".join(f", {impl} {t * 1e9:.0f} ns (per-group = {per_round['fairkernels'] / t:.2f}x)"
                    for impl, t in per_round.items() if impl != "fairkernels"))


if __name__ == "__main__":
    main()
