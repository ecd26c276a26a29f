"""``fairkernels grpo``: run the GRPO / unlikeliness-reward experiment from the command line.

The package CLI calls :func:`register` with its subparsers; ``python -m
fairkernels.experiments.grpo.cli`` runs the same command on its own.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .arms import ARMS

if TYPE_CHECKING:
    from .run import ExperimentConfig

# torch and the training code are imported only when the command runs, so that building the
# package CLI (which registers every experiment) stays cheap and works without torch.


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``grpo`` command."""
    parser.add_argument("--quick", action="store_true",
                        help="small smoke configuration (under 2 minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: a new folder under ./runs/)")
    parser.add_argument("--workers", type=_positive_int, default=2,
                        help="parallel worker processes (default 2)")
    parser.add_argument("--rl-seeds", type=_positive_int, default=None,
                        help="number of RL seeds per arm (default 5; quick: 2)")
    parser.add_argument("--base-seeds", type=_positive_int, default=None,
                        help="number of base-policy seeds (default 2; quick: 1)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="GRPO steps per run (default 500; quick: 40)")
    parser.add_argument("--eval-samples", type=_positive_int, default=None,
                        help="samples per problem for pass@N (default 1024; quick: 256)")
    parser.add_argument("--n-train-hard", type=int, default=None,
                        help="hard (rare-style-only) problems added to the GRPO training set "
                             "(default 0)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=None,
                        help="arms to run (default: all)")
    parser.add_argument("--variant", choices=("reliable_rare", "plain"), default="reliable_rare",
                        help="base-policy design: reliable_rare (default; the rare style is "
                             "'*2 first' and the base continues it reliably) or plain (any *2 "
                             "proof, plain maximum likelihood)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or tables")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:  # noqa: F821
    """Build the experiment configuration from parsed options."""
    from .run import quick_config, variant_config
    variant = getattr(args, "variant", "reliable_rare")
    cfg = (quick_config(workers=args.workers, variant=variant) if args.quick
           else variant_config(variant, workers=args.workers))
    if args.rl_seeds is not None:
        cfg = replace(cfg, rl_seeds=tuple(range(args.rl_seeds)))
    if args.base_seeds is not None:
        cfg = replace(cfg, base_seeds=tuple(range(args.base_seeds)))
    if args.steps is not None:
        cfg = replace(cfg, grpo=replace(cfg.grpo, steps=args.steps))
    if args.eval_samples is not None:
        cfg = replace(cfg, eval_samples=args.eval_samples)
    if args.n_train_hard is not None:
        if args.n_train_hard < 0:
            raise ValueError(f"--n-train-hard must be >= 0, got {args.n_train_hard}")
        cfg = replace(cfg, task=replace(cfg.task, n_train_hard=args.n_train_hard))
    if args.arms is not None:
        cfg = replace(cfg, arms=tuple(a for a in ARMS if a in args.arms))
    return cfg


def handle(args: argparse.Namespace) -> int:
    """Handler of the ``grpo`` command."""
    from .run import run_experiment
    run_experiment(config_from_args(args), out_dir=args.out, quiet=args.quiet)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``grpo`` subcommand to a package CLI's subparsers."""
    parser = subparsers.add_parser(
        "grpo", help="GRPO vs unlikeliness reward on a synthetic proof task",
        description="Fit base policies, run GRPO arms (grpo, unlikeliness, grpo_2epochs), "
                    "evaluate pass@N on held-out and training problems, write CSV/JSON/PNG.")
    add_arguments(parser)
    parser.set_defaults(func=handle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m fairkernels.experiments.grpo.cli grpo ...``.

    The subcommand name may be left out.
    """
    parser = argparse.ArgumentParser(prog="fairkernels")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    argv = list(argv) if argv is not None else None
    import sys
    raw = sys.argv[1:] if argv is None else argv
    if not raw or raw[0] != "grpo":
        raw = ["grpo", *raw]
    args = parser.parse_args(raw)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
