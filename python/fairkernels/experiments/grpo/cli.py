"""``fairkernels grpo``: run the GRPO / unlikeliness-reward experiment from the command line.

The package CLI calls :func:`register` with its subparsers; ``python -m
fairkernels.experiments.grpo.cli`` runs the same command on its own.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from .. import sweep
from ..argtypes import UniqueValues, non_negative_int, positive_int
from ..outputs import UsageError
from .arms import ARMS

if TYPE_CHECKING:
    from .run import ExperimentConfig

# torch and the training code are imported only when the command runs, so that building the
# package CLI (which registers every experiment) stays cheap and works without torch.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``grpo`` command (lists: one group per combination of --variant, --steps
    and --n-train-hard; one cell per base fit and per (arm, seed))."""
    lists = {"nargs": "+", "action": UniqueValues, "default": None}
    parser.add_argument("--quick", action="store_true",
                        help="small smoke configuration (under 2 minutes on 2 cores)")
    parser.add_argument("--rl-seeds", type=positive_int, default=None,
                        help="number of RL seeds per arm (default 5; quick: 2)")
    parser.add_argument("--base-seeds", type=positive_int, default=None,
                        help="number of base-policy seeds (default 2; quick: 1)")
    parser.add_argument("--steps", type=positive_int, **lists,
                        help="GRPO steps per run (default 500; quick: 40)")
    parser.add_argument("--eval-samples", type=positive_int, default=None,
                        help="samples per problem for pass@N, a multiple of 32 and >= 256 "
                             "(default 1024; quick: 256)")
    parser.add_argument("--n-train-hard", type=non_negative_int, **lists,
                        help="hard (rare-style-only) problems added to the GRPO training set "
                             "(default 0)")
    parser.add_argument("--arms", nargs="+", action=UniqueValues, choices=sorted(ARMS), default=None,
                        help="arms to run (default: all)")
    parser.add_argument("--variant", choices=("reliable_rare", "plain"), **lists,
                        help="base-policy design: reliable_rare (default; the rare style is "
                             "'*2 first' and the base continues it reliably) or plain (any *2 "
                             "proof, plain maximum likelihood)")
    sweep.add_sweep_arguments(parser)


def configs_from_args(args: argparse.Namespace) -> list[tuple[str, ExperimentConfig]]:  # noqa: F821
    """(label, configuration) of every group the options ask for; UsageError for options that
    do not fit together (checked before anything runs)."""
    from .run import quick_config, variant_config

    workers = args.workers or sweep.usable_cpus()
    axes = {"variant": args.variant or ["reliable_rare"], "steps": args.steps or [None],
            "n_train_hard": args.n_train_hard or [None]}
    varied = [name for name, values in axes.items() if len(values) > 1]
    groups = []
    for variant, steps, n_train_hard in itertools.product(*axes.values()):
        try:
            cfg = (quick_config(workers=workers, variant=variant) if args.quick
                   else variant_config(variant, workers=workers))
            if args.rl_seeds is not None:
                cfg = replace(cfg, rl_seeds=tuple(range(args.rl_seeds)))
            if args.base_seeds is not None:
                cfg = replace(cfg, base_seeds=tuple(range(args.base_seeds)))
            if steps is not None:
                cfg = replace(cfg, grpo=replace(cfg.grpo, steps=steps))
            if args.eval_samples is not None:
                cfg = replace(cfg, eval_samples=args.eval_samples)
            if n_train_hard is not None:
                cfg = replace(cfg, task=replace(cfg.task, n_train_hard=n_train_hard))
            if args.arms is not None:
                cfg = replace(cfg, arms=tuple(a for a in ARMS if a in args.arms))
        except ValueError as error:  # e.g. --eval-samples 100: not a multiple of 32
            raise UsageError(str(error)) from None
        values = {"variant": variant, "steps": cfg.grpo.steps, "n_train_hard": cfg.task.n_train_hard}
        groups.append((sweep.group_label(values, varied), cfg))
    return groups


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:  # noqa: F821
    """The configuration of a command that asks for one group (see :func:`configs_from_args`)."""
    groups = configs_from_args(args)
    if len(groups) != 1:
        raise UsageError(f"the options ask for {len(groups)} groups; use configs_from_args")
    return groups[0][1]


def handle(args: argparse.Namespace) -> int:
    """Handler of the ``grpo`` command: 0, or 1 if some cells failed (the others are saved)."""
    from .run import run_experiments

    groups = configs_from_args(args)
    out = sweep.output_dir(args, "grpo")
    executor = sweep.executor_from_args(args)
    _, outcome = run_experiments(groups, out, executor, quiet=args.quiet)
    return sweep.report_failures(out, outcome)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``grpo`` subcommand to a package CLI's subparsers."""
    parser = subparsers.add_parser(
        "grpo", help="GRPO vs unlikeliness reward on a synthetic proof task",
        description="Fit base policies, run the RL arms (grpo, unlikeliness, grpo_2epochs, passk), "
                    "evaluate pass@N on held-out and training problems, write CSV/JSON/PNG.")
    add_arguments(parser)
    parser.set_defaults(func=handle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m fairkernels.experiments.grpo.cli grpo ...``.

    The subcommand name may be left out.
    """
    import sys

    from fairkernels.cli import main as package_main

    raw = list(sys.argv[1:] if argv is None else argv)
    if not raw or raw[0] != "grpo":
        raw = ["grpo", *raw]
    return package_main(raw)


if __name__ == "__main__":
    raise SystemExit(main())
