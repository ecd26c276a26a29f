"""``fairkernels causalrm``: the CausalRM experiment on simulated observational feedback.

For every seed, alpha (observation bias; 1 = unbiased) and label-noise setting, trains the
reward head with each method (naive, ips, snips, dr, noise-aware only, CausalRM-ips,
CausalRM-dr; beyond the paper CausalRM-sndr / -switch_dr / -dros / -sg_ips / -sg_dr, dr with
its imputer trained jointly by dr_jl or mrdr, dr with the forward or the class-wise
non-negative correction; true and fitted propensities; the oracle and pos_only references)
and reports NLL, RMSE and AUROC on a clean, fully observed test set, mean ± standard error
over seeds.  --estimators picks the families.  Writes results.csv, summary.csv, results.json
(configuration + summary), tables.md, recommendations.md (the best method per setting and
seed-by-seed paired differences to naive and CausalRM-dr), paired.csv and PNG plots to --out
(default: a new folder under ./runs/).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Mapping

from .. import sweep
from ..argtypes import UniqueValues, integer, non_negative_int, positive_int, real
from . import methods as method_set

DEFAULT_ALPHAS = (0.01, 0.1, 0.2, 0.5, 1.0)
DEFAULT_NOISE = ("0,0", "0.1,0.2", "0.2,0.1")
#: The defaults of the grid and of the training; --quick swaps in a small smoke run.
FULL = dict(seeds=5, alphas=list(DEFAULT_ALPHAS), noise=[(0.0, 0.0), (0.1, 0.2), (0.2, 0.1)], p_min=[0.1],
            pool=20_000, test=20_000, epochs=40, patience=10)
QUICK = dict(seeds=1, alphas=[0.1, 1.0], noise=[(0.0, 0.0), (0.2, 0.1)], p_min=[0.1], pool=4000, test=4000,
             epochs=10, patience=3)
#: Columns that identify a cell, in the order the records are sorted.
CELL_KEYS = ("seed", "alpha", "rho10", "rho01", "p_min")


def noise_pair(text: str) -> tuple[float, float]:
    """RHO10,RHO01: label flip rates with 0 <= rho < 1 and rho10 + rho01 < 1."""
    try:
        rho10, rho01 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RHO10,RHO01 (two numbers), got {text!r}") from None
    if not (0 <= rho10 < 1 and 0 <= rho01 < 1 and rho10 + rho01 < 1):
        raise argparse.ArgumentTypeError(f"{text}: need 0 <= rho < 1 and rho10 + rho01 < 1")
    return rho10, rho01


noise_pair.__name__ = "noise pair"


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "causalrm", help="CausalRM: reward models from biased, noisy observational feedback",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lists = {"nargs": "+", "action": UniqueValues, "default": None}
    parser.add_argument("--quick", action="store_true",
                        help="small smoke-run defaults (1 seed, alphas 0.1 1, noise 0,0 0.2,0.1, pool and test "
                             "4000, 10 epochs, patience 3; < 1 minute); flags given explicitly override them")
    parser.add_argument("--seeds", type=positive_int, default=None, help="number of seeds (0, 1, ...) (default 5)")
    parser.add_argument("--alphas", type=real(0, open_low=True), **lists,
                        help="observation-bias grid (default: 0.01 0.1 0.2 0.5 1)")
    parser.add_argument("--noise", type=noise_pair, metavar="RHO10,RHO01", **lists,
                        help="label flip rates rho10=P(1|0),rho01=P(0|1) (default: 0,0 0.1,0.2 0.2,0.1)")
    parser.add_argument("--p-min", type=real(0, 1, open_low=True), **lists,
                        help="propensity clipping grid (default 0.1)")
    parser.add_argument("--pool", type=integer(100), default=None, help="training pool size (80/20 train/validation)")
    parser.add_argument("--test", type=integer(100), default=None, help="test set size (clean, fully observed)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="maximum epochs (default 40)")
    parser.add_argument("--patience", type=non_negative_int, default=None, help="early-stopping patience (default 10)")
    parser.add_argument("--allow-negative", action="store_true",
                        help="train without the non-negative clamp of the corrected risk (diverges; see spec)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per cell (default 1)")
    parser.add_argument("--estimators", choices=method_set.ESTIMATOR_CHOICES, metavar="NAME", **lists,
                        help="estimator families to train (default: all: " + " ".join(method_set.ESTIMATOR_CHOICES) +
                             "; dr_jl / mrdr are CausalRM-dr with its imputer trained jointly by that objective); "
                             "naive, CausalRM-dr, oracle and pos_only always run")
    parser.add_argument("--corrections", choices=method_set.EXTRA_CORRECTIONS, nargs="*", action=UniqueValues,
                        default=None, metavar="NAME",
                        help="noise corrections besides the paper's backward one, as CausalRM-dr[NAME] "
                             "(default: forward classwise; give the flag alone for none)")
    parser.add_argument("--tau", type=real(0, open_low=True), **lists,
                        help="switch_dr's weight thresholds, one method each (default 5)")
    parser.add_argument("--dros-lambda", type=real(0, open_low=True), **lists,
                        help="dros' shrinkage values, one method each (default 100)")
    parser.add_argument("--sg-lambda", type=real(0, 1), **lists,
                        help="sg_ips / sg_dr's lambda values in [0, 1], one method each (default 0.1)")
    sweep.add_sweep_arguments(parser)
    parser.set_defaults(func=run)
    return parser


#: The method set's defaults (the same under --quick).
METHOD_DEFAULTS = dict(estimators=list(method_set.ESTIMATOR_CHOICES), corrections=list(method_set.EXTRA_CORRECTIONS),
                       tau=list(method_set.DEFAULT_TAU), dros_lambda=list(method_set.DEFAULT_DROS_LAMBDA),
                       sg_lambda=list(method_set.DEFAULT_SG_LAMBDA))
#: Settings every cell runs under (part of its key: a change reruns the cell).
TRAINING_KEYS = ("pool", "test", "epochs", "patience", "nonnegative", "threads") + tuple(METHOD_DEFAULTS)


def _config(args: argparse.Namespace) -> dict:
    base = {**(QUICK if args.quick else FULL), **METHOD_DEFAULTS}
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else base[name] for name in base}
    return dict(seeds=chosen["seeds"], alphas=chosen["alphas"], noise=[tuple(n) for n in chosen["noise"]],
                p_mins=chosen["p_min"], pool=chosen["pool"], test=chosen["test"], epochs=chosen["epochs"],
                patience=chosen["patience"], nonnegative=not args.allow_negative, threads=args.threads,
                **{name: chosen[name] for name in METHOD_DEFAULTS})


def method_list(config: Mapping[str, Any]) -> list[method_set.Method]:
    """The methods a configuration (or a cell of it) trains, in table order."""
    return method_set.methods(config["estimators"], config["tau"], config["dros_lambda"], config["sg_lambda"],
                              config["corrections"])


def cells(config: dict) -> list[sweep.Cell]:
    """One cell per (seed, alpha, noise setting, p_min), with the training settings it runs under."""
    training = {k: config[k] for k in TRAINING_KEYS}
    out = []
    for seed in range(config["seeds"]):
        for alpha in config["alphas"]:
            for rho10, rho01 in config["noise"]:
                for p_min in config["p_mins"]:
                    grid = dict(seed=seed, alpha=alpha, rho10=rho10, rho01=rho01, p_min=p_min)
                    label = f"seed={seed},alpha={alpha:g},noise={rho10:g},{rho01:g},p_min={p_min:g}"
                    out.append(sweep.Cell({**grid, **training}, label, cpus=config["threads"]))
    return out


def run_cell(cell: Mapping[str, Any], inputs: Any = None) -> list[dict]:
    """One (seed, alpha, noise, p_min) cell; runs in a worker. One record per method."""
    import numpy as np
    import torch

    from .simulate import simulate
    from .train import TrainConfig
    from .train import run_cell as train_cell

    torch.set_num_threads(cell["threads"])
    sim = simulate(cell["seed"], cell["alpha"], cell["rho10"], cell["rho01"], pool=cell["pool"], test=cell["test"])
    train_config = TrainConfig(max_epochs=cell["epochs"], patience=cell["patience"],
                               nonnegative=cell["nonnegative"], p_min=cell["p_min"])
    records = train_cell(sim, cell["rho10"], cell["rho01"], train_config, seed=1000 * cell["seed"] + 17,
                         ms=method_list(cell))
    observed = np.concatenate([sim.train.observed, sim.val.observed])
    clean = np.concatenate([sim.train.clean, sim.val.clean])
    context = {
        **{k: cell[k] for k in CELL_KEYS},
        "observed_fraction": float(observed.mean()),
        "observed_positive_fraction": float(clean[observed].mean()) if observed.any() else float("nan"),
        "observed_negatives": int((clean[observed] == 0).sum()),
    }
    return [{**context, **r} for r in records]


def run(args: argparse.Namespace) -> int:
    import fairkernels

    from . import report

    out = sweep.output_dir(args, "causalrm")
    executor = sweep.executor_from_args(args)
    config = _config(args)
    grid = cells(config)
    started = time.time()
    with executor:
        result = sweep.Sweep("causalrm", out, executor, progress=not args.quiet).run(run_cell, grid, "causalrm cells")
    elapsed = time.time() - started
    records = [r for cell in grid for r in result.results.get(sweep.cell_key("causalrm", cell.config), [])]
    if not records:
        print("causalrm: no finished cell, no output", file=sys.stderr)
        return sweep.report_failures(out, result)
    records.sort(key=lambda r: tuple(r[k] for k in CELL_KEYS))
    summary = report.summarise(records)
    ms = method_list(config)
    names = [m.name for m in ms]
    tables = report.all_tables(summary, names)
    if not args.quiet:
        print(tables)
        print(f"{len(grid)} cells ({result.done} run, {result.skipped} already done, {len(result.failures)} failed), "
              f"{len(records)} runs in {elapsed:.0f} s; results in {out}")
    report.write_csv(out / "results.csv", records)
    report.write_csv(out / "summary.csv", summary)
    report.write_text(out / "tables.md", tables + "\n")
    report.write_csv(out / "paired.csv", report.paired_rows(records, names))
    report.write_text(out / "recommendations.md", report.comparison_report(records, summary, names) + "\n")
    report.write_json(out / "results.json", {
        "experiment": "causalrm",
        "config": {**config, "noise": [list(n) for n in config["noise"]], "executor": executor.name,
                   "workers": executor.workers},
        "methods": names,
        "complete": not result.failures,
        "elapsed_seconds": elapsed,
        "build": fairkernels.build_info(),
        "summary": summary,
    })
    # Two figures per metric: the paper's methods, and the estimators beyond it (true
    # propensities) beside the two baselines; thirty lines in one panel are unreadable.
    paper, beyond = method_set.split_for_plots(ms)
    for metric in report.METRICS:
        report.plot(summary, paper, metric, out / f"{metric}_vs_alpha.png")
        if len(beyond) > len(method_set.BASELINES):
            report.plot(summary, beyond, metric, out / f"{metric}_vs_alpha_beyond.png")
    return sweep.report_failures(out, result)
