"""``fairkernels ofs``: the Optimistic Feasible Search experiment, over a grid of settings.

One group = one setting (environment, horizon, grid, cohort, cost, eps, rho_min, bound, alpha,
delta, split seed: every flag that takes a list); one cell = one seed of one group (every method
and every fixed threshold in one fused call). The group's table is made from its seeds' cells.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import sweep
from ..argtypes import UniqueValues, integer, non_negative_int, positive_int, real
from ..outputs import UsageError, save_figure, write_csv_dicts, write_json

COLUMNS = ("avg_reward", "cum_violation", "excess_violation", "net_violation", "gap_to_oracle", "steady_violation")
CSV_FIELDS = ["method"] + [k for c in COLUMNS + ("steady_reward",) for k in (c, c + "_se")]
ENVIRONMENTS = ("synthetic", "german", "compas")  # as fairkernels.envs.ENVIRONMENTS (not imported: cheap CLI)
#: The flags that take lists, in the order of the grid (and of the group labels).
AXES = ("env", "horizon", "grid", "cohort", "cost", "eps", "rho_min", "bound", "alpha", "delta", "split_seed")
#: Configuration fields that only the aggregation reads (not part of a cell's key).
AGGREGATION_ONLY = ("seeds", "steady_fraction", "extra")


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ofs", help="Optimistic Feasible Search vs UCB, primal-dual and the fixed-threshold oracle",
        description="Runs OFS, UCB, primal-dual (eta sweep) and every fixed threshold through the closed loop "
                    "over seeds, for every combination of the list-valued settings; prints each setting's facts "
                    "and table; writes CSV, JSON and PNG to --out (one subfolder per setting and sweep.csv when "
                    "several settings are given).")
    lists = {"nargs": "+", "action": UniqueValues}
    parser.add_argument("--env", default=["synthetic"], choices=ENVIRONMENTS, **lists)
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="seeds per setting (default 10; 3 with --quick)")
    parser.add_argument("--horizon", type=positive_int, default=None, **lists,
                        help="rounds T (default 10000; 2000 with --quick)")
    parser.add_argument("--grid", type=integer(2), default=[51], **lists, help="grid points K")
    parser.add_argument("--cohort", type=positive_int, default=[2000], **lists, help="individuals per round n")
    parser.add_argument("--cost", type=real(0), default=[None], **lists,
                        help="false-positive cost c (default 1; german: 1 or 5)")
    parser.add_argument("--eps", type=real(0, 1), default=[None], **lists,
                        help="DP tolerance (default 0.1; german: 0.05 for c=1, 0.1 for c=5)")
    parser.add_argument("--rho-min", type=real(0, 1), default=[None], **lists,
                        help="add the service-rate constraint A >= rho_min")
    parser.add_argument("--bound", default=["ucb1"], choices=("ucb1", "hoeffding", "bernstein"), **lists)
    parser.add_argument("--alpha", type=real(0, open_low=True), default=[2.0], **lists)
    parser.add_argument("--delta", type=real(0, 1, open_low=True, open_high=True), default=[0.05], **lists)
    parser.add_argument("--eta-scales", type=real(0), default=[0.1, 1.0, 10.0], **lists,
                        help="primal-dual step sizes, in units of 1/sqrt(T) (methods of every setting)")
    parser.add_argument("--steady-fraction", type=real(0, 1, open_low=True), default=0.2,
                        help="steady state = this last fraction")
    parser.add_argument("--split-seed", type=non_negative_int, default=[0], **lists,
                        help="train/pool split of german and compas")
    parser.add_argument("--seed", type=integer(0, 2**64 - 1), default=0, help="Philox key of all random streams")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="3 seeds, T = 2000: seconds")
    parser.add_argument("--no-plots", action="store_true")
    sweep.add_sweep_arguments(parser)
    parser.set_defaults(func=main)
    return parser


# ----------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Group:
    label: str          # the varied settings, e.g. "env=german,cost=5" ("" for a single setting)
    settings: dict      # axis -> value
    config: Any         # run.Config


def groups_from_args(args: argparse.Namespace) -> list[Group]:
    from .run import Config

    seeds = args.seeds if args.seeds is not None else (3 if args.quick else 10)
    values = {axis: getattr(args, axis) for axis in AXES}
    if values["horizon"] is None:
        values["horizon"] = [2000 if args.quick else 10000]
    varied = [axis for axis in AXES if len(values[axis]) > 1]
    groups = []
    for combination in itertools.product(*(values[axis] for axis in AXES)):
        settings = dict(zip(AXES, combination))
        config = Config(seeds=seeds, eta_scales=tuple(args.eta_scales), steady_fraction=args.steady_fraction,
                        seed=args.seed, device=args.device, **settings)
        groups.append(Group(sweep.group_label(settings, varied), settings, config))
    return groups


def cell_config(config: Any, seed_index: int) -> dict[str, Any]:
    """What one seed's run depends on: the configuration without the aggregation-only fields
    (the split seed only where the environment has a split), and the seed index."""
    fields = {k: v for k, v in asdict(config).items() if k not in AGGREGATION_ONLY}
    if config.env == "synthetic":
        fields["split_seed"] = 0  # no split: every split seed gives the same cell
    fields["eta_scales"] = list(config.eta_scales)
    return {**fields, "seed_index": seed_index}


def cells_of(group: Group) -> list[sweep.Cell]:
    prefix = f"{group.label}," if group.label else ""
    gpus = 1.0 if group.config.device == "cuda" else 0.0
    return [sweep.Cell(cell_config(group.config, s), f"{prefix}seed={s}", gpus=gpus)
            for s in range(group.config.seeds)]


def run_cell(config: Mapping[str, Any], inputs: Any = None) -> dict[str, Any]:
    """The cell function (runs in a worker): one seed of one setting."""
    from .run import Config, run_seed

    options = {k: v for k, v in config.items() if k != "seed_index"}
    run_config = Config(**{**options, "eta_scales": tuple(options["eta_scales"])})
    return run_seed(run_config, _environment(run_config.env, json.dumps(run_config.env_options(), sort_keys=True)),
                    int(config["seed_index"]))


@functools.lru_cache(maxsize=8)
def _environment(name: str, options_json: str) -> Any:
    """The environment table, built once per worker process (the data sets fit a score model)."""
    from fairkernels.envs import make_env

    return make_env(name, **json.loads(options_json))


# ----------------------------------------------------------------------------- the command

def main(args: argparse.Namespace) -> int:
    import fairkernels
    from fairkernels.datasets import DatasetError

    out = sweep.output_dir(args, "ofs")
    executor = sweep.executor_from_args(args)
    if args.device == "cuda" and executor.name == "local" and not fairkernels.cuda_available():
        raise UsageError("--device cuda: no usable CUDA device here (fairkernels info says why)")
    groups = groups_from_args(args)
    try:  # in the driver too: the facts, and a missing data set fails before any cell runs
        envs = [_environment(g.config.env, json.dumps(g.config.env_options(), sort_keys=True)) for g in groups]
    except DatasetError as error:
        print(f"fairkernels ofs: {error}", file=sys.stderr)
        return 2
    started = time.time()
    with executor:
        result = sweep.Sweep("ofs", out, executor, progress=not args.quiet).run(
            run_cell, [cell for g in groups for cell in cells_of(g)], desc="ofs cells")
    elapsed = time.time() - started
    summaries = []
    for group, env in zip(groups, envs):
        folder = out if len(groups) == 1 else out / group.label
        summary = report_group(group, env, result, folder, args, elapsed)
        if summary is not None:
            summaries.append((group, summary))
    if len(groups) > 1:
        write_sweep_table(out / "sweep.csv", summaries)
    if not args.quiet:
        print(f"wrote {out} ({elapsed:.1f} s; cells: {result.done} run, {result.skipped} already done, "
              f"{len(result.failures)} failed)")
    return sweep.report_failures(out, result)


def report_group(group: Group, env: Any, result: sweep.SweepResult, folder: Path, args: argparse.Namespace,
                 elapsed: float) -> Any:
    """Aggregates the group's finished seeds, prints and writes its outputs; None without any."""
    import fairkernels

    from .run import summarise

    keys = [sweep.cell_key("ofs", cell.config) for cell in cells_of(group)]
    seeds_done = [s for s, key in enumerate(keys) if key in result.results]
    if not seeds_done:
        print(f"{group.label or 'ofs'}: no finished seed, no output", file=sys.stderr)
        return None
    config = group.config
    results = summarise(config, env, [result.results[keys[s]] for s in seeds_done])
    results["seeds_done"] = seeds_done
    results["complete"] = len(seeds_done) == config.seeds
    results["version"] = fairkernels.__version__
    results["command"] = "fairkernels " + " ".join(sys.argv[1:]) if sys.argv and "ofs" in sys.argv else None
    results["elapsed_s"] = elapsed
    if not args.quiet:
        _print_group(group, env, config, results)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv_dicts(folder / "results.csv", results["rows"], CSV_FIELDS, extrasaction="ignore")
    write_json(folder / "results.json", results)
    if not args.no_plots:
        _plots(results, folder)
    return results


def _print_group(group: Group, env: Any, config: Any, results: dict) -> None:
    done = len(results["seeds_done"])
    seeds = f"{config.seeds}" if results["complete"] else f"{done} of {config.seeds} (incomplete)"
    title = f"[{group.label}] " if group.label else ""
    print(f"{title}environment {env.name}: K={env.n_arms}, n={env.cohort}, c={env.cost:g}, eps={env.eps:g}, "
          f"p0={env.p0:.3f}, T={config.horizon}, seeds={seeds}")
    print("facts (expected values at each threshold's steady share):")
    print("  " + results["facts_text"].replace("\n", "\n  "))
    o = results["oracle"]
    if o["arm"] is None:
        print("simulated oracle: no fixed threshold is feasible in steady state")
    else:
        print(f"simulated oracle: threshold {o['threshold']:.3f} (arm {o['arm']}), steady reward "
              f"{o['steady_reward']:.4f}, steady residual {o['steady_residual']:+.4f}")
    print(_format_table(results["rows"]))


def write_sweep_table(path: Path, summaries: list[tuple[Group, dict]]) -> None:
    """One row per (setting, method): the settings' values, then the columns of results.csv."""
    rows = []
    for group, results in summaries:
        for row in results["rows"]:
            rows.append({"group": group.label, **{a: _csv_value(group.settings[a]) for a in AXES},
                         "seeds": len(results["seeds_done"]), **row})
    write_csv_dicts(path, rows, ["group", *AXES, "seeds", *CSV_FIELDS], extrasaction="ignore")


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def _format_table(rows: list[dict]) -> str:
    header = ["method", "avg reward", "cum violation", "excess viol.", "(sum h)+", "ss gap", "ss violation"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        cells = [r["method"]]
        for key, fmt in zip(COLUMNS, (".4f", ".1f", ".1f", ".1f", "+.4f", ".4f")):
            cells.append(f"{r[key]:{fmt}} ± {r[key + '_se']:{fmt.lstrip('+')}}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


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
    save_figure(fig, out / "curves.png", dpi=120)
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
    save_figure(fig, out / "sweep.png", dpi=120)
    plt.close(fig)

