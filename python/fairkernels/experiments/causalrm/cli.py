"""``fairkernels causalrm``: the CausalRM experiment on simulated observational feedback.

For every seed, alpha (observation bias; 1 = unbiased) and label-noise setting, trains the
reward head with each method (naive, ips, snips, dr, noise-aware only, CausalRM-ips,
CausalRM-dr; true and fitted propensities; the oracle and pos_only references) and reports
NLL, RMSE and AUROC on a clean, fully observed test set, mean ± standard error over seeds.
Writes results.csv, summary.csv, results.json (configuration + summary), tables.md and PNG
plots to --out (default: a new folder under ./runs/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_ALPHAS = (0.01, 0.1, 0.2, 0.5, 1.0)
DEFAULT_NOISE = ("0,0", "0.1,0.2", "0.2,0.1")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "causalrm", help="CausalRM: reward models from biased, noisy observational feedback",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="a small smoke run (1 seed, 2 alphas, 2 noise settings, small data; < 1 minute)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ./runs/causalrm-<time>)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...) (default 5)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                        help="observation-bias grid (default: 0.01 0.1 0.2 0.5 1)")
    parser.add_argument("--noise", nargs="+", default=list(DEFAULT_NOISE), metavar="RHO10,RHO01",
                        help="label flip rates rho10=P(1|0),rho01=P(0|1) (default: 0,0 0.1,0.2 0.2,0.1)")
    parser.add_argument("--p-min", type=float, nargs="+", default=[0.1], help="propensity clipping grid (default 0.1)")
    parser.add_argument("--pool", type=int, default=20_000, help="training pool size (80/20 train/validation)")
    parser.add_argument("--test", type=int, default=20_000, help="test set size (clean, fully observed)")
    parser.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience (default 10)")
    parser.add_argument("--allow-negative", action="store_true",
                        help="train without the non-negative clamp of the corrected risk (diverges; see spec)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one cell each (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.set_defaults(func=run)


def _parse_noise(values: list[str]) -> list[tuple[float, float]]:
    out = []
    for value in values:
        try:
            rho10, rho01 = (float(v) for v in value.split(","))
        except ValueError as error:
            raise SystemExit(f"--noise expects RHO10,RHO01 pairs, got {value!r}") from error
        if not (0 <= rho10 < 1 and 0 <= rho01 < 1 and rho10 + rho01 < 1):
            raise SystemExit(f"--noise {value}: need 0 <= rho < 1 and rho10 + rho01 < 1")
        out.append((rho10, rho01))
    return out


def _config(args: argparse.Namespace) -> dict:
    if args.quick:
        return dict(seeds=1, alphas=[0.1, 1.0], noise=[(0.0, 0.0), (0.2, 0.1)], p_mins=[0.1], pool=4000,
                    test=4000, epochs=10, patience=3, nonnegative=True, workers=args.workers, threads=args.threads)
    return dict(seeds=args.seeds, alphas=args.alphas, noise=_parse_noise(args.noise), p_mins=args.p_min,
                pool=args.pool, test=args.test, epochs=args.epochs, patience=args.patience,
                nonnegative=not args.allow_negative, workers=args.workers, threads=args.threads)


def _cells(config: dict) -> list[dict]:
    return [
        dict(seed=seed, alpha=alpha, rho10=rho10, rho01=rho01, p_min=p_min)
        for seed in range(config["seeds"])
        for alpha in config["alphas"]
        for rho10, rho01 in config["noise"]
        for p_min in config["p_mins"]
    ]


def run_one(cell: dict, config: dict) -> list[dict]:
    """One (seed, alpha, noise, p_min) cell; runs in a worker process."""
    import numpy as np
    import torch

    from .simulate import simulate
    from .train import TrainConfig, run_cell

    torch.set_num_threads(config["threads"])
    sim = simulate(cell["seed"], cell["alpha"], cell["rho10"], cell["rho01"], pool=config["pool"], test=config["test"])
    train_config = TrainConfig(max_epochs=config["epochs"], patience=config["patience"],
                               nonnegative=config["nonnegative"], p_min=cell["p_min"])
    records = run_cell(sim, cell["rho10"], cell["rho01"], train_config, seed=1000 * cell["seed"] + 17)
    observed = np.concatenate([sim.train.observed, sim.val.observed])
    clean = np.concatenate([sim.train.clean, sim.val.clean])
    context = {
        **cell,
        "observed_fraction": float(observed.mean()),
        "observed_positive_fraction": float(clean[observed].mean()) if observed.any() else float("nan"),
        "observed_negatives": int((clean[observed] == 0).sum()),
    }
    return [{**context, **r} for r in records]


def run(args: argparse.Namespace) -> int:
    import concurrent.futures
    import multiprocessing

    from tqdm import tqdm

    import fairkernels

    from . import report
    from .train import methods

    config = _config(args)
    out = args.out or Path("runs") / time.strftime("causalrm-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    cells = _cells(config)
    started = time.time()
    records: list[dict] = []
    context = multiprocessing.get_context("spawn")  # no fork after OpenMP / torch threads started
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, config["workers"]), mp_context=context) as pool:
        futures = [pool.submit(run_one, cell, config) for cell in cells]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="causalrm cells"):
            records.extend(future.result())
    elapsed = time.time() - started
    records.sort(key=lambda r: (r["seed"], r["alpha"], r["rho10"], r["rho01"], r["p_min"]))
    summary = report.summarise(records)
    names = [m.name for m in methods()]
    tables = report.all_tables(summary, names)
    print(tables)
    print(f"{len(cells)} cells, {len(records)} runs in {elapsed:.0f} s; results in {out}")
    report.write_csv(out / "results.csv", records)
    report.write_csv(out / "summary.csv", summary)
    (out / "tables.md").write_text(tables + "\n")
    report.write_json(out / "results.json", {
        "experiment": "causalrm",
        "config": {**config, "noise": [list(n) for n in config["noise"]]},
        "methods": names,
        "elapsed_seconds": elapsed,
        "build": fairkernels.build_info(),
        "summary": summary,
    })
    for metric in report.METRICS:
        report.plot(summary, names, metric, out / f"{metric}_vs_alpha.png")
    return 0
