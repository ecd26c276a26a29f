"""Shared vs per-group thresholds for OFS, each against its oracle, and fairlearn's offline
ThresholdOptimizer run through the same closed loop (the "Beyond the paper" section of the spec).

Per environment, on one C-point grid (default 21):
* shared: OFS over the C thresholds, and every fixed threshold (the shared oracle = the best one
  whose steady mean residual over the seeds is <= 0);
* per-group: OFS over the C x C pairs (``run_episodes(per_group=True)``), and every fixed pair
  (the per-group oracle);
* fairlearn (optional, ``fairlearn`` installed): ``ThresholdOptimizer(constraints=
  "demographic_parity", tol=eps)`` fitted offline on the labelled pool (for the synthetic
  environment, a sample of its distributions), its randomised per-group policy reduced to one
  extra table column (its acceptance rates given the label, per group) and run as a fixed arm.
All learners share the environment, horizon, cohort size and seeds; each (method, seed) has its
own random stream.  The function returns plain data; :func:`describe` renders it as markdown.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from ...bandits import EnvTable, pair_arms, run_episodes
from ...envs import make_env

STREAM_BLOCK = 1 << 20  # stream id = learner column * STREAM_BLOCK + seed
WITHIN = 0.005          # "within 0.005 of": the reward distance the comparison counts rounds for


@dataclass
class PerGroupConfig:
    env: str = "synthetic"
    seeds: int = 10
    horizon: int = 10000            # T, rounds
    grid: int = 21                  # C thresholds per group (C^2 per-group arms)
    cohort: int = 2000              # n
    cost: Optional[float] = None    # c (environment default when None)
    eps: Optional[float] = None     # DP tolerance (environment default when None)
    bound: str = "ucb1"
    steady_fraction: float = 0.2
    buckets: int = 100
    split_seed: int = 0
    seed: int = 0
    fairlearn: bool = True
    synthetic_pool: int = 20000     # labelled rows fairlearn is fitted on (synthetic environment)

    def env_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"grid": self.grid, "cohort": self.cohort}
        if self.eps is not None:
            options["eps"] = self.eps
        if self.cost is not None:
            options["cost"] = self.cost
        if self.env != "synthetic":
            options["split_seed"] = self.split_seed
        return options


def pair_expected_steady(env: EnvTable) -> dict[str, np.ndarray]:
    """Expected reward and DP residual ``[C, C]`` of every fixed pair (k_a, k_b) at its steady
    group share ``p* = sigmoid(logit(p0) + kappa (A_a[k_a] - A_b[k_b]))``."""
    acc = env.accept_rate
    gap = acc[0][:, None] - acc[1][None, :]
    share = 1.0 / (1.0 + np.exp(-(math.log(env.p0 / (1 - env.p0)) + env.kappa * gap)))
    gain = env.base_rate[:, None] * env.tpr - env.cost * (1 - env.base_rate[:, None]) * env.fpr  # [2, C]
    reward = (share * gain[0][:, None] + (1 - share) * gain[1][None, :] + env.cost) / (1 + env.cost)
    return {"reward": reward, "residual": np.abs(gap) - env.eps, "share": share}


def policy_class_facts(env: EnvTable) -> dict[str, Any]:
    """The value of the larger policy class, from the table: best feasible pair against best
    feasible shared threshold (expected, at steady share)."""
    pairs = pair_expected_steady(env)
    feasible = pairs["residual"] <= 0
    facts: dict[str, Any] = {"n_feasible_pairs": int(feasible.sum()),
                             "n_feasible_shared": int(np.diag(feasible).sum())}
    for name, mask in (("pair", feasible), ("shared", np.diag(np.diag(feasible)))):
        if not mask.any():
            facts[f"best_{name}"] = None
            continue
        k_a, k_b = np.unravel_index(np.argmax(np.where(mask, pairs["reward"], -np.inf)), mask.shape)
        facts[f"best_{name}"] = {"thresholds": [float(env.grid[k_a]), float(env.grid[k_b])],
                                 "reward": float(pairs["reward"][k_a, k_b]),
                                 "residual": float(pairs["residual"][k_a, k_b])}
    return facts


# -- fairlearn's offline policy as one more table column -----------------------------------------

def _labelled_pool(config: PerGroupConfig, env: EnvTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, labels, groups) fairlearn is fitted on: the environment's held-out pool, or for
    the synthetic environment a sample of its score distributions."""
    if config.env == "synthetic":
        from ...envs.synthetic import BASE_RATE, SCORE_BETA

        rng = np.random.default_rng(config.seed + 12345)
        n = config.synthetic_pool
        group = (rng.random(n) >= env.p0).astype(np.int64)
        label = (rng.random(n) < np.asarray(BASE_RATE)[group]).astype(np.int64)
        scores = np.empty(n)
        for (g, y), (a, b) in SCORE_BETA.items():
            rows = (group == g) & (label == y)
            scores[rows] = rng.beta(a, b, int(rows.sum()))
        return scores, label, group
    from ...datasets import load_compas, load_german
    from ...envs._scored import fit_scores, split_pool

    table = load_compas() if config.env == "compas" else load_german()
    train, pool = split_pool(table, config.split_seed)
    return fit_scores(table, train, pool), table.label[pool], table.group[pool]


def fairlearn_rates(config: PerGroupConfig, env: EnvTable) -> dict[str, Any]:
    """Fits fairlearn's ThresholdOptimizer (demographic parity, tol = eps, objective accuracy)
    on the labelled pool and returns its per-group P(accept | y, g): ``tpr [2]``, ``fpr [2]``
    (its decisions are randomised between two thresholds per group; these are their rates)."""
    import fairlearn
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.base import BaseEstimator

    class _Scores(BaseEstimator):  # the scores are already there: a pass-through "model"
        def fit(self, X: Any, y: Any = None) -> _Scores:
            self.fitted_ = True
            return self

        def predict(self, X: Any) -> np.ndarray:
            return np.asarray(X)[:, 0]

    scores, label, group = _labelled_pool(config, env)
    optimizer = ThresholdOptimizer(estimator=_Scores().fit(None), constraints="demographic_parity", tol=env.eps,
                                   prefit=True, predict_method="predict")
    optimizer.fit(scores[:, None], label, sensitive_features=group)
    evaluation = (scores, label, group)
    if config.env == "synthetic":  # rates under the true distributions, from a large fresh sample
        evaluation = _labelled_pool(PerGroupConfig(env="synthetic", seed=config.seed + 1, synthetic_pool=400000), env)
    s, y, g = evaluation
    accept = optimizer._pmf_predict(s[:, None], sensitive_features=g)[:, 1]
    tpr = np.array([accept[(g == k) & (y == 1)].mean() for k in (0, 1)])
    fpr = np.array([accept[(g == k) & (y == 0)].mean() for k in (0, 1)])
    return {"version": fairlearn.__version__, "tpr": tpr, "fpr": fpr, "pool_rows": int(scores.size),
            "thresholder": str(optimizer.interpolated_thresholder_.interpolation_dict)}


def with_policy_column(env: EnvTable, tpr: np.ndarray, fpr: np.ndarray) -> EnvTable:
    """The table with one more column holding a policy's per-group rates (its "threshold" -1 is
    a marker, not a threshold).  Per-group arm (C, C) of the new table plays that policy."""
    return EnvTable(np.append(env.grid, -1.0), np.column_stack([env.tpr, tpr]), np.column_stack([env.fpr, fpr]),
                    env.base_rate, p0=env.p0, beta=env.beta, kappa=env.kappa, cohort=env.cohort, cost=env.cost,
                    eps=env.eps, rho_min=env.rho_min, name=env.name)


# -- the closed-loop runs --------------------------------------------------------------------------

def _run(env: EnvTable, config: PerGroupConfig, rules: list[str], fixed: list[int], per_group: bool,
         first_column: int) -> dict[str, np.ndarray]:
    """All seeds in one kernel call; per-learner-column metrics [S, L] and bucket curves [S, L, NB]."""
    S, T = config.seeds, config.horizon
    L = len(rules)
    ids = [(first_column + m) * STREAM_BLOCK + s for s in range(S) for m in range(L)]
    traces = run_episodes(env, rules * S, n_rounds=T, seed=config.seed, stream_ids=ids, fixed_arms=fixed * S,
                          bound=config.bound, n_buckets=min(config.buckets, T), per_group=per_group)
    NB = traces.reward.shape[1]
    steady = max(1, int(round(NB * config.steady_fraction)))
    steady_rounds = traces.bucket_rounds[-steady:].sum()
    shape = (S, L)
    return {
        "reward_curve": (traces.reward / traces.bucket_rounds).reshape(S, L, NB),
        "residual_curve": (traces.residual[:, :, 0] / traces.bucket_rounds).reshape(S, L, NB),
        "avg_reward": (traces.reward.sum(axis=1) / T).reshape(shape),
        "cum_violation": traces.violation.sum(axis=1).reshape(shape),
        "steady_reward": (traces.reward[:, -steady:].sum(axis=1) / steady_rounds).reshape(shape),
        "steady_residual": (traces.residual[:, -steady:, 0].sum(axis=1) / steady_rounds).reshape(shape),
        "rounds": np.cumsum(traces.bucket_rounds),
    }


def _oracle(run: dict[str, np.ndarray], columns: slice) -> Optional[int]:
    """Column of the best fixed arm whose steady mean residual (over seeds) is <= 0."""
    reward = run["steady_reward"][:, columns].mean(axis=0)
    residual = run["steady_residual"][:, columns].mean(axis=0)
    feasible = residual <= 0
    if not feasible.any():
        return None
    return columns.start + int(np.flatnonzero(feasible)[np.argmax(reward[feasible])])


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(np.mean(x)), se


def _row(name: str, run: dict[str, np.ndarray], column: int, oracle: Optional[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name}
    for key in ("avg_reward", "steady_reward", "steady_residual", "cum_violation"):
        row[key], row[key + "_se"] = _mean_se(run[key][:, column])
    row["steady_violation"] = max(0.0, row["steady_residual"])
    if oracle is not None:
        gap = oracle["steady_reward_by_seed"] - run["steady_reward"][:, column]
        row["gap_to_oracle"], row["gap_to_oracle_se"] = _mean_se(gap)
    return row


def rounds_to_within(run: dict[str, np.ndarray], column: int, target: float, within: float = WITHIN) -> Optional[int]:
    """First round after which every bucket's seed-mean reward stays within ``within`` of
    ``target`` (None if it never settles)."""
    curve = run["reward_curve"][:, column].mean(axis=0)
    close = np.abs(curve - target) <= within
    if not close[-1]:
        return None
    last_far = np.flatnonzero(~close)
    start = 0 if last_far.size == 0 else int(last_far[-1]) + 1
    return int(run["rounds"][start - 1]) if start > 0 else 0


def run_per_group(config: PerGroupConfig, env: Optional[EnvTable] = None) -> dict[str, Any]:
    """Runs the comparison for one environment; returns rows, facts and curves (plain data)."""
    env = env if env is not None else make_env(config.env, **config.env_options())
    C = env.n_arms
    shared = _run(env, config, ["ofs"] + ["fixed"] * C, [0] + list(range(C)), False, 0)
    per_group = _run(env, config, ["ofs"] + ["fixed"] * (C * C), [0] + list(range(C * C)), True, 1 + C)
    results: dict[str, Any] = {"config": asdict(config), "env": env.name, "grid": env.grid.tolist(),
                               "facts": policy_class_facts(env), "rows": [], "rounds_to_within": {}}
    oracles = {}
    for label, run, n_fixed in (("shared", shared, C), ("per-group", per_group, C * C)):
        column = _oracle(run, slice(1, 1 + n_fixed))
        if column is None:
            oracles[label] = None
            continue
        arm = column - 1
        thresholds = ([float(env.grid[arm])] * 2 if label == "shared"
                      else [float(env.grid[arm // C]), float(env.grid[arm % C])])
        oracles[label] = {"column": column, "thresholds": thresholds, "run": run,
                          "steady_reward_by_seed": run["steady_reward"][:, column]}
    for label, run in (("shared", shared), ("per-group", per_group)):
        oracle = oracles[label]
        results["rows"].append(_row(f"OFS {label}", run, 0, oracle))
        if oracle is not None:
            taus = "/".join(f"{t:.2f}" for t in oracle["thresholds"])
            results["rows"].append(_row(f"oracle {label} ({taus})", run, oracle["column"], oracle))
            target = float(run["steady_reward"][:, oracle["column"]].mean())
            results["rounds_to_within"][f"OFS {label} -> its oracle"] = rounds_to_within(run, 0, target)
    if config.fairlearn:
        rates = fairlearn_rates(config, env)
        extended = with_policy_column(env, rates["tpr"], rates["fpr"])
        fixed_arm = int(pair_arms(C + 1, C, C))
        fl = _run(extended, config, ["fixed"], [fixed_arm], True, 1 + C + 1 + C * C)
        results["fairlearn"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in rates.items()}
        results["rows"].append(_row(f"fairlearn {rates['version']} ThresholdOptimizer (offline, fixed)", fl, 0,
                                    oracles["per-group"]))
        target = float(fl["steady_reward"][:, 0].mean())
        results["rounds_to_within"]["OFS per-group -> fairlearn"] = rounds_to_within(per_group, 0, target)
    results["curves"] = {"rounds": per_group["rounds"].tolist(),
                         "OFS shared": shared["reward_curve"][:, 0].mean(axis=0).tolist(),
                         "OFS per-group": per_group["reward_curve"][:, 0].mean(axis=0).tolist()}
    return results


def describe(results: dict[str, Any]) -> str:
    """Markdown: facts, the table of rows, rounds to get within 0.005."""
    f = results["facts"]
    lines = [f"### {results['env']} (grid {len(results['grid'])} per group, T = {results['config']['horizon']}, "
             f"{results['config']['seeds']} seeds)", ""]
    for name in ("shared", "pair"):
        best = f[f"best_{name}"]
        lines.append(f"- best feasible {name} (expected, steady share): " + (
            "none" if best is None else
            f"thresholds {best['thresholds'][0]:.2f}/{best['thresholds'][1]:.2f}, reward {best['reward']:.4f}, "
            f"residual {best['residual']:+.4f}"))
    lines.append(f"- feasible arms: {f['n_feasible_shared']} shared, {f['n_feasible_pairs']} pairs")
    lines += ["", "| method | steady reward | gap to oracle | steady residual | cum. violation | avg reward |",
              "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        gap = f"{row['gap_to_oracle']:+.4f} ± {row['gap_to_oracle_se']:.4f}" if "gap_to_oracle" in row else ""
        lines.append(f"| {row['method']} | {row['steady_reward']:.4f} ± {row['steady_reward_se']:.4f} | {gap} | "
                     f"{row['steady_residual']:+.4f} | {row['cum_violation']:.1f} ± {row['cum_violation_se']:.1f} | "
                     f"{row['avg_reward']:.4f} |")
    lines.append("")
    for name, rounds in results["rounds_to_within"].items():
        lines.append(f"- rounds until {name} stays within {WITHIN}: "
                     + ("never (within the horizon)" if rounds is None else f"{rounds}"))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m fairkernels.experiments.ofs.per_group``: flags validated before anything runs
    (exit 2, one line), the JSON written atomically and strictly (no NaN tokens)."""
    from ..argtypes import positive_int, real
    from ..outputs import write_json

    parser = argparse.ArgumentParser(description="OFS with shared vs per-group thresholds, and fairlearn")
    parser.add_argument("--env", default="synthetic", choices=["synthetic", "compas", "german"])
    parser.add_argument("--seeds", type=positive_int, default=10)
    parser.add_argument("--horizon", type=positive_int, default=10000)
    parser.add_argument("--grid", type=positive_int, default=21)
    parser.add_argument("--cost", type=real(0.0), default=None)
    parser.add_argument("--eps", type=real(0.0, 1.0), default=None)
    parser.add_argument("--no-fairlearn", action="store_true")
    parser.add_argument("--json", default=None, help="write the results (without curves) here")
    args = parser.parse_args(argv)
    if args.json is not None:
        from pathlib import Path

        target = Path(args.json)
        if not target.parent.exists() or target.is_dir():
            parser.error(f"--json: {target} cannot be written (its folder is missing, or it is a folder)")
    config = PerGroupConfig(env=args.env, seeds=args.seeds, horizon=args.horizon, grid=args.grid, cost=args.cost,
                            eps=args.eps, fairlearn=not args.no_fairlearn)
    results = run_per_group(config)
    print(describe(results))
    if args.json:
        write_json(Path(args.json), {k: v for k, v in results.items() if k != "curves"})


if __name__ == "__main__":
    main()
