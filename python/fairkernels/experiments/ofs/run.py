"""The OFS experiment as a function: configuration in, table and curves out (no I/O)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ...bandits import EnvTable, run_episodes
from ...envs import env_facts, make_env

STREAM_BLOCK = 1 << 20  # stream id = method index * STREAM_BLOCK + seed index


@dataclass
class Config:
    env: str = "synthetic"
    seeds: int = 10
    horizon: int = 10000          # T, rounds
    grid: int = 51                # K
    cohort: int = 2000            # n
    cost: Optional[float] = None  # c (environment default when None)
    eps: Optional[float] = None   # DP tolerance (environment default when None)
    rho_min: Optional[float] = None
    bound: str = "ucb1"
    alpha: float = 2.0
    delta: float = 0.05
    eta_scales: tuple[float, ...] = (0.1, 1.0, 10.0)  # primal-dual eta = scale / sqrt(T)
    steady_fraction: float = 0.2
    buckets: int = 100
    split_seed: int = 0
    seed: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def env_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"grid": self.grid, "cohort": self.cohort, "rho_min": self.rho_min}
        if self.eps is not None:
            options["eps"] = self.eps
        if self.env != "synthetic":
            options["split_seed"] = self.split_seed
        if self.cost is not None:
            options["cost"] = self.cost
        return options


def _device_array(device: str) -> Any:
    """The ``like=`` array that runs the episodes on ``device`` (torch when it has CUDA, else CuPy)."""
    if device == "cpu":
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return torch.empty(0, device="cuda")
    except ImportError:
        pass
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError("device 'cuda' needs torch with CUDA or CuPy") from error
    return cupy.empty(0)


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(np.mean(x)), se


def method_specs(config: Config) -> list[dict[str, Any]]:
    """The learning methods (the fixed-threshold sweep is added separately)."""
    T = config.horizon
    specs = [{"method": "OFS", "rule": "ofs", "eta": 0.0}, {"method": "UCB", "rule": "ucb", "eta": 0.0}]
    for scale in config.eta_scales:
        specs.append({"method": f"PD eta={scale:g}/sqrt(T)", "rule": "primal_dual", "eta": scale / math.sqrt(T)})
    return specs


def run_seed(config: Config, env: EnvTable, seed_index: int) -> dict[str, np.ndarray]:
    """One seed of the experiment: every method and every fixed threshold through the closed
    loop in one fused call. Returns the per-bucket reward, violation and residual [B, NB(, M)],
    the pulls [B, K] and the rounds per bucket [NB]."""
    rules, etas, fixed_arms = _learners(config, env)
    ids = [m * STREAM_BLOCK + seed_index for m in range(len(rules))]
    tr = run_episodes(env, rules, n_rounds=config.horizon, seed=config.seed, stream_ids=ids, fixed_arms=fixed_arms,
                      eta=etas, bound=config.bound, alpha=config.alpha, delta=config.delta,
                      n_buckets=min(config.buckets, config.horizon), like=_device_array(config.device))
    return {"reward": np.asarray(tr.reward), "violation": np.asarray(tr.violation),
            "residual": np.asarray(tr.residual), "pulls": np.asarray(tr.pulls),
            "bucket_rounds": np.asarray(tr.bucket_rounds)}


def _learners(config: Config, env: EnvTable) -> tuple[list[str], list[float], list[int]]:
    """The rules, step sizes and fixed arms of the B learners: the methods, then every threshold."""
    specs = method_specs(config)
    K = env.n_arms
    rules = [s["rule"] for s in specs] + ["fixed"] * K
    etas = [s["eta"] for s in specs] + [0.0] * K
    fixed_arms = [0] * len(specs) + list(range(K))
    return rules, etas, fixed_arms


def run_experiment(config: Config, env: Optional[EnvTable] = None,
                   progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Runs every method and every fixed threshold for each seed; returns the results."""
    env = env if env is not None else make_env(config.env, **config.env_options())
    per_seed = []
    for s in range(config.seeds):
        per_seed.append(run_seed(config, env, s))
        if progress is not None:
            progress(1)
    return summarise(config, env, per_seed)


def summarise(config: Config, env: EnvTable, per_seed: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The table, oracle, sweep and curves from the seeds' runs (:func:`run_seed`), in seed order."""
    if not per_seed:
        raise ValueError("per_seed must hold at least one seed's run")
    K, T, S = env.n_arms, config.horizon, len(per_seed)
    NB = min(config.buckets, T)
    specs = method_specs(config)
    n_methods = len(specs)
    B = n_methods + K
    # float64 accumulators, as when each seed's run was copied into preallocated float64 arrays
    reward, violation, residual, pulls = (np.stack([np.asarray(p[name], dtype=np.float64) for p in per_seed])
                                          for name in ("reward", "violation", "residual", "pulls"))
    bucket_rounds = per_seed[-1]["bucket_rounds"]
    steady_buckets = max(1, int(round(NB * config.steady_fraction)))
    steady_rounds = bucket_rounds[-steady_buckets:].sum()
    steady_reward = reward[:, :, -steady_buckets:].sum(axis=2) / steady_rounds          # [S, B]
    steady_residual = residual[:, :, -steady_buckets:].sum(axis=2) / steady_rounds      # [S, B, M]
    avg_reward = reward.sum(axis=2) / T
    cum_violation = violation.sum(axis=2)
    net_violation = np.maximum(residual.sum(axis=2), 0).max(axis=2)                    # (sum_t h_t)_+
    steady_violation = np.maximum(steady_residual, 0).max(axis=2)

    # Oracle: the best fixed threshold whose steady-state mean residual (over seeds) is <= 0.
    sweep = slice(n_methods, B)
    sweep_reward = steady_reward[:, sweep].mean(axis=0)
    sweep_residual = steady_residual[:, sweep].mean(axis=0).max(axis=1)
    feasible = sweep_residual <= 0
    oracle = int(np.flatnonzero(feasible)[np.argmax(sweep_reward[feasible])]) if feasible.any() else None
    oracle_col = n_methods + (oracle if oracle is not None else int(np.argmin(sweep_residual)))

    rows = []
    names = [s["method"] for s in specs] + ["Oracle (best feasible fixed threshold)"]
    cols = list(range(n_methods)) + [oracle_col]
    for name, col in zip(names, cols):
        row: dict[str, Any] = {"method": name}
        metrics = {
            "avg_reward": avg_reward[:, col],
            "cum_violation": cum_violation[:, col],
            "excess_violation": cum_violation[:, col] - cum_violation[:, oracle_col],
            "net_violation": net_violation[:, col],
            "gap_to_oracle": steady_reward[:, oracle_col] - steady_reward[:, col],
            "steady_reward": steady_reward[:, col],
            "steady_violation": steady_violation[:, col],
        }
        for key, values in metrics.items():
            row[key], row[key + "_se"] = _mean_se(values)
        rows.append(row)

    facts = env_facts(env)
    t_axis = np.cumsum(bucket_rounds)
    curves = {
        "rounds": t_axis.tolist(),
        "methods": names,
        "reward": [(reward[:, c] / bucket_rounds).mean(axis=0).tolist() for c in cols],
        "cum_violation": [np.cumsum(violation[:, c], axis=1).mean(axis=0).tolist() for c in cols],
        "cum_violation_se": [(np.cumsum(violation[:, c], axis=1).std(axis=0, ddof=1) / math.sqrt(S)).tolist()
                             if S > 1 else [0.0] * NB for c in cols],
    }
    return {
        "config": asdict(config),
        "env": {"name": env.name, "n_arms": K, "p0": env.p0, "cost": env.cost, "eps": env.eps,
                "cohort": env.cohort, "rho_min": env.rho_min, "beta": env.beta, "kappa": env.kappa},
        "facts": facts.as_dict(),
        "facts_text": facts.describe(T, env.cohort),
        "oracle": {"arm": oracle, "threshold": None if oracle is None else float(env.grid[oracle]),
                   "steady_reward": None if oracle is None else float(sweep_reward[oracle]),
                   "steady_residual": None if oracle is None else float(sweep_residual[oracle])},
        "sweep": {"threshold": env.grid.tolist(), "steady_reward": sweep_reward.tolist(),
                  "steady_residual": sweep_residual.tolist(), "feasible": feasible.tolist()},
        "learners_steady": {names[i]: {"steady_reward": float(steady_reward[:, cols[i]].mean()),
                                       "steady_residual": float(steady_residual[:, cols[i]].mean(axis=0).max())}
                            for i in range(n_methods)},
        "pulls": {names[i]: pulls[:, cols[i]].mean(axis=0).tolist() for i in range(n_methods)},
        "rows": rows,
        "curves": curves,
    }
