"""``fairkernels ofs``: the Optimistic Feasible Search experiment on one environment."""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any

COLUMNS = ("avg_reward", "cum_violation", "excess_violation", "net_violation", "gap_to_oracle", "steady_violation")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ofs", help="Optimistic Feasible Search vs UCB, primal-dual and the fixed-threshold oracle",
        description="Runs OFS, UCB, primal-dual (eta sweep) and every fixed threshold through the closed loop "
                    "over seeds; prints the environment's facts and the table; writes CSV, JSON and PNG to --out.")
    parser.add_argument("--env", default="synthetic", choices=("synthetic", "german", "compas"))
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 10; 3 with --quick)")
    parser.add_argument("--horizon", type=int, default=None, help="rounds T (default 10000; 2000 with --quick)")
    parser.add_argument("--grid", type=int, default=51, help="grid points K")
    parser.add_argument("--cohort", type=int, default=2000, help="individuals per round n")
    parser.add_argument("--cost", type=float, default=None, help="false-positive cost c (default 1; german: 1 or 5)")
    parser.add_argument("--eps", type=float, default=None,
                        help="DP tolerance (default 0.1; german: 0.05 for c=1, 0.1 for c=5)")
    parser.add_argument("--rho-min", type=float, default=None, help="add the service-rate constraint A >= rho_min")
    parser.add_argument("--bound", default="ucb1", choices=("ucb1", "hoeffding", "bernstein"))
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--eta-scales", type=float, nargs="+", default=[0.1, 1.0, 10.0],
                        help="primal-dual step sizes, in units of 1/sqrt(T)")
    parser.add_argument("--steady-fraction", type=float, default=0.2, help="steady state = this last fraction")
    parser.add_argument("--split-seed", type=int, default=0, help="train/pool split of german and compas")
    parser.add_argument("--seed", type=int, default=0, help="Philox key of all random streams")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="3 seeds, T = 2000: seconds")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new folder in ./runs/)")
    parser.add_argument("--no-plots", action="store_true")
    parser.set_defaults(func=main)


def _format_table(rows: list[dict]) -> str:
    header = ["method", "avg reward", "cum violation", "excess viol.", "(sum h)+", "ss gap", "ss violation"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        cells = [r["method"]]
        for key, fmt in zip(COLUMNS, (".4f", ".1f", ".1f", ".1f", "+.4f", ".4f")):
            cells.append(f"{r[key]:{fmt}} ± {r[key + '_se']:{fmt.lstrip('+')}}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import fairkernels
    from fairkernels.datasets import DatasetError
    from fairkernels.envs import make_env

    from .run import Config, run_experiment

    seeds = args.seeds if args.seeds is not None else (3 if args.quick else 10)
    horizon = args.horizon if args.horizon is not None else (2000 if args.quick else 10000)
    if seeds < 1 or horizon < 1:
        print("--seeds and --horizon must be >= 1", file=sys.stderr)
        return 2
    config = Config(env=args.env, seeds=seeds, horizon=horizon, grid=args.grid, cohort=args.cohort, cost=args.cost,
                    eps=args.eps, rho_min=args.rho_min, bound=args.bound, alpha=args.alpha, delta=args.delta,
                    eta_scales=tuple(args.eta_scales), steady_fraction=args.steady_fraction,
                    split_seed=args.split_seed, seed=args.seed, device=args.device)
    started = time.time()
    try:
        env = make_env(config.env, **config.env_options())
    except DatasetError as error:
        print(f"fairkernels ofs: {error}", file=sys.stderr)
        return 2
    print(f"environment {env.name}: K={env.n_arms}, n={env.cohort}, c={env.cost:g}, eps={env.eps:g}, "
          f"p0={env.p0:.3f}, T={horizon}, seeds={seeds}")
    with tqdm(total=seeds, desc=f"ofs {env.name}", unit="seed", file=sys.stderr) as bar:
        results = run_experiment(config, env, progress=bar.update)
    elapsed = time.time() - started
    results["version"] = fairkernels.__version__
    results["command"] = "fairkernels " + " ".join(sys.argv[1:]) if sys.argv and "ofs" in sys.argv else None
    results["elapsed_s"] = elapsed
    print("facts (expected values at each threshold's steady share):")
    print("  " + results["facts_text"].replace("\n", "\n  "))
    o = results["oracle"]
    if o["arm"] is None:
        print("simulated oracle: no fixed threshold is feasible in steady state")
    else:
        print(f"simulated oracle: threshold {o['threshold']:.3f} (arm {o['arm']}), steady reward "
              f"{o['steady_reward']:.4f}, steady residual {o['steady_residual']:+.4f}")
    print(_format_table(results["rows"]))
    out = args.out or Path("runs") / f"ofs-{args.env}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        fields = ["method"] + [k for c in COLUMNS + ("steady_reward",) for k in (c, c + "_se")]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["rows"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if not args.no_plots:
        _plots(results, out)
    print(f"wrote {out}/results.csv, results.json" + ("" if args.no_plots else ", curves.png, sweep.png")
          + f" ({elapsed:.1f} s)")
    return 0


def _plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = results["curves"]
    t = np.array(c["rounds"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, reward, cum, se in zip(c["methods"], c["reward"], c["cum_violation"], c["cum_violation_se"]):
        axes[0].plot(t, reward, label=name, lw=1.2)
        cum, se = np.array(cum), np.array(se)
        axes[1].plot(t, cum, label=name, lw=1.2)
        axes[1].fill_between(t, cum - se, cum + se, alpha=0.2)
    axes[0].set(xlabel="round", ylabel="reward (bucket mean over seeds)", title=f"{results['env']['name']}: reward")
    axes[1].set(xlabel="round", ylabel="cumulative violation sum_t sum_j max(0, h)", title="cumulative violation")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    s = results["sweep"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    residual, reward = np.array(s["steady_residual"]), np.array(s["steady_reward"])
    ax.plot(residual, reward, "-o", ms=3, color="0.5", label="fixed thresholds (steady state)")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    o = results["oracle"]
    if o["arm"] is not None:
        ax.plot([o["steady_residual"]], [o["steady_reward"]], "*", ms=16, color="gold", mec="k",
                label=f"oracle tau={o['threshold']:.2f}")
    for name, point in results["learners_steady"].items():
        ax.plot([point["steady_residual"]], [point["steady_reward"]], "x", ms=9, mew=2, label=name)
    ax.set(xlabel="steady-state mean residual (max over constraints)", ylabel="steady-state reward",
           title=f"{results['env']['name']}: fixed-threshold sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
