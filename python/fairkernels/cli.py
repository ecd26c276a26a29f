"""The ``fairkernels`` command: ``fairkernels info`` and one subcommand per experiment."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from typing import Any, Callable, Optional, Sequence

# Experiment subcommands: each module exposes register(subparsers), which adds its parser
# and sets ``func`` (called with the parsed arguments, returns an exit status).
EXPERIMENT_CLIS = (
    "fairkernels.experiments.ofs.cli",
    "fairkernels.experiments.causalrm.cli",
    "fairkernels.experiments.grpo.cli",
)


def _info(args: argparse.Namespace) -> int:
    """Reports the build, the machine's huge-page settings and runs one small advantage
    computation as a self-check."""
    import numpy as np

    import fairkernels
    from fairkernels import _memory

    print(json.dumps({**fairkernels.build_info(), "huge_pages": _memory.describe()}, indent=2))
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=np.float32)
    advantages = fairkernels.group_advantages(rewards, group_size=4)
    print("group_advantages([1,0,0,1 | 1,1,1,0], group_size=4) =", np.round(advantages, 4).tolist())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairkernels", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = subparsers.add_parser("info", help="report the build (backends, CUDA, huge pages) and run a self-check")
    info.set_defaults(func=_info)
    for module_name in EXPERIMENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # that experiment is not part of this installation
            raise
        module.register(subparsers)
    for command in subparsers.choices.values():
        command.set_defaults(command_parser=command)  # for errors found after parsing (exit 2, one line)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command; returns its exit status: 0, 1 (some cells of a sweep failed; the others
    are saved), 2 (a usage error, found before any work starts), 130 (interrupted by Ctrl-C) or
    143 (ended by SIGTERM); interrupted sweeps keep their finished cells."""
    from .experiments.outputs import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    restore_sigterm = _terminate_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except UsageError as error:
        getattr(args, "command_parser", parser).error(str(error))  # exits with status 2
    except KeyboardInterrupt as interrupt:
        print("\ninterrupted: finished cells are saved; rerun the same command (same --out) to run the rest",
              file=sys.stderr)
        return 128 + (interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT)
    finally:
        restore_sigterm()
    return 2  # not reached: error() exits


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command runs so that it stops as on Ctrl-C: the executors'
    clean-up runs (a local pool's workers are ended) and the exit status is 143."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _terminate_as_interrupt() -> Callable[[], None]:
    """Installs the SIGTERM handler (batch schedulers such as SLURM send SIGTERM at a time
    limit; by default it would end the driver at once and leave the pool's workers computing
    cells nobody collects).  Returns the call that puts the previous handler back.  Off the
    main thread Python allows no handler, and nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def restore() -> None:
        # None: the previous handler was not set from Python; the default is the closest match.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore
