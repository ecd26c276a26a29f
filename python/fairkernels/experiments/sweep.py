"""Experiment grids: independent cells, run by a local process pool or a Ray cluster, resumable.

A sweep is a list of :class:`Cell`: one fully specified run whose configuration is plain JSON
data. The cell function (a module-level function ``fn(config, inputs) -> result``) runs in a
worker; its result (JSON data and numpy arrays) comes back to the driver, which writes it
atomically to ``<out>/cells/<key>.json``. The key hashes the experiment name, the configuration
and the fairkernels version, so

* rerunning the same command with the same ``--out`` loads the finished cells and runs only the
  missing ones (a killed driver or a lost worker costs at most the cells in flight);
* a changed configuration or library version never reuses a stale cell;
* the experiment's tables and files are made from the decoded cells in grid order, never in
  completion order, so they are identical whichever executor ran the cells and in what order.

Results are stored losslessly: floats as their shortest round-trip text (NaN and infinities
tagged, since the files are strict JSON) and numpy arrays as their raw bytes (base64) with dtype
and shape, so a resumed sweep aggregates exactly the numbers a fresh one would.

Executors: :class:`LocalExecutor` (a ``spawn`` process pool on this machine, the default) and
:class:`RayExecutor` (tasks on a Ray cluster: ``--ray-address``, else a new local instance; Ray
schedules, places and retries the tasks of a lost worker). Neither is a scheduler of our own.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as _dt
import hashlib
import json
import math
import multiprocessing
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from .argtypes import positive_int
from .outputs import UsageError, atomic_write_text, prepare_output_dir, write_json

#: Version of the cell-file layout (part of every key: a new layout never reads an old file).
CELL_SCHEMA = 1
CellFunction = Callable[[Mapping[str, Any], Any], Any]
#: Environment variables that cell functions read (data and cache folders of the data sets);
#: forwarded to Ray workers, which may not have inherited the driver's environment.
FORWARDED_ENV = ("FAIRKERNELS_DATA_DIR", "FAIRKERNELS_CACHE_DIR", "FAIRKERNELS_PROPENSITY_ISA")


def _version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------- cells and keys

@dataclass(frozen=True)
class Cell:
    """One run of a grid.

    config: everything the result depends on (JSON data: str, int, float, bool, None, lists,
        dicts with str keys); it alone defines the key.
    label: a short human description (progress and failure reports).
    inputs: data handed to the cell function that is itself derived from other cells (e.g. a
        fitted base policy); not part of the key, since the config that produced it is.
    cpus, gpus: what the cell uses (the Ray task's resource request; Ray hides the GPUs from a
        task that asks for none).
    """

    config: Mapping[str, Any]
    label: str = ""
    inputs: Any = None
    cpus: float = 1.0
    gpus: float = 0.0


def encode(value: Any) -> Any:
    """``value`` as JSON data that :func:`decode` turns back into an equal value, bit for bit:
    non-finite floats and numpy arrays become tagged objects; numpy scalars, Python numbers;
    tuples, lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cell results cannot hold object arrays")
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
        return {"$array": {"dtype": value.dtype.str, "shape": list(value.shape), "data": data}}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$"):
                raise TypeError(f"cell data keys must be strings not starting with '$', got {key!r}")
            out[key] = encode(item)
        return out
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    raise TypeError(f"cell data must be JSON data or numpy arrays, got {type(value).__name__}")


def _decode_object(obj: dict) -> Any:
    if len(obj) == 1 and "$float" in obj:
        return float(obj["$float"])
    if len(obj) == 1 and "$array" in obj:
        spec = obj["$array"]
        raw = base64.b64decode(spec["data"])
        return np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()
    return obj


def dumps(value: Any, canonical: bool = False) -> str:
    """Compact, strict JSON text of ``encode(value)``; dict order is kept (it is the column order
    of the tables made from the cells) unless ``canonical`` sorts the keys (for hashing)."""
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":"), sort_keys=canonical)


def loads(text: str) -> Any:
    return json.loads(text, object_hook=_decode_object)


def cell_key(experiment: str, config: Mapping[str, Any]) -> str:
    """A hash of the experiment, the cell's configuration, the library version and the layout."""
    identity = {"experiment": experiment, "config": config, "version": _version(), "schema": CELL_SCHEMA}
    return hashlib.sha256(dumps(identity, canonical=True).encode("utf-8")).hexdigest()[:32]


class CellStore:
    """The finished cells of one experiment under ``<out>/cells`` (one JSON file per cell)."""

    def __init__(self, out: Path, experiment: str) -> None:
        self.root = Path(out) / "cells"
        self.experiment = experiment
        prepare_output_dir(self.root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str, config: Mapping[str, Any]) -> tuple[bool, Any]:
        """(True, result) for a finished cell of this configuration; (False, None) otherwise.
        An unreadable or foreign file is treated as missing (the cell runs again and replaces it)."""
        path = self.path(key)
        try:
            record = loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False, None
        except (OSError, ValueError) as error:
            print(f"warning: ignoring unreadable cell file {path} ({error}); the cell runs again", file=sys.stderr)
            return False, None
        expected = {"schema": CELL_SCHEMA, "experiment": self.experiment, "key": key, "version": _version()}
        stale = any(record.get(k) != v for k, v in expected.items())
        if stale or dumps(record.get("config"), True) != dumps(config, True):
            print(f"warning: cell file {path} does not match its configuration; the cell runs again", file=sys.stderr)
            return False, None
        return True, record["result"]

    def save(self, key: str, cell: Cell, result_text: str, outcome: Outcome) -> Any:
        """Writes a finished cell atomically; returns its result decoded from the stored text, so
        that fresh and resumed sweeps aggregate the very same values."""
        header = dumps({"schema": CELL_SCHEMA, "experiment": self.experiment, "key": key, "version": _version(),
                        "config": cell.config, "label": cell.label, "seconds": outcome.seconds,
                        "worker": outcome.host,
                        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        record_text = header[:-1] + ',"result":' + result_text + "}"
        atomic_write_text(self.path(key), record_text + "\n")
        return loads(record_text)["result"]


# ----------------------------------------------------------------------------- executors

class Outcome(NamedTuple):
    """What a worker sends back for one cell."""

    ok: bool
    text: str        # the result as cell JSON (ok) or the error with its traceback (not ok)
    seconds: float
    version: str     # the worker's fairkernels version (must equal the driver's)
    host: str


def execute(fn: CellFunction, config: Mapping[str, Any], inputs: Any) -> Outcome:
    """Runs one cell in a worker. An exception of the cell becomes a failed Outcome (reported
    with the cell's configuration), so it never stops the other cells."""
    started = time.perf_counter()
    host = f"{socket.gethostname()}:{os.getpid()}"
    try:
        text = dumps(fn(config, inputs))
    except Exception:  # noqa: BLE001 - any error of a cell is data for the failure report
        return Outcome(False, traceback.format_exc(), time.perf_counter() - started, _version(), host)
    return Outcome(True, text, time.perf_counter() - started, _version(), host)


def _failed(message: str) -> Outcome:
    return Outcome(False, message, 0.0, _version(), "")


class LocalExecutor:
    """Cells in a pool of ``workers`` processes on this machine (``spawn``: no fork after torch
    or OpenMP threads started). A worker process that dies breaks the pool: every cell not yet
    finished is reported as failed, the finished ones are kept, and rerunning the command runs
    the rest."""

    name = "local"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: Optional[concurrent.futures.ProcessPoolExecutor] = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if self._pool is not None:
            if kind is None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            else:
                _end_pool(self._pool)
            self._pool = None

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self._pool

    def map_unordered(self, fn: CellFunction, cells: Sequence[Cell]) -> Iterator[tuple[int, Outcome]]:
        pool = self._ensure_pool()
        futures = {pool.submit(execute, fn, cell.config, cell.inputs): index for index, cell in enumerate(cells)}
        try:
            for future in concurrent.futures.as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - e.g. BrokenProcessPool: a worker died
                    if isinstance(error, concurrent.futures.process.BrokenProcessPool) and self._pool is pool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = None  # the next stage starts a fresh pool
                    outcome = _failed(f"the worker process failed: {type(error).__name__}: {error}")
                yield futures[future], outcome
        finally:
            for future in futures:
                future.cancel()


def _end_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Ends an interrupted or failed sweep's pool: cancels the cells not started and ends the
    workers of the running ones, whose results no one will collect (``shutdown`` alone lets
    them compute on, and the interpreter's exit would wait for them).

    ProcessPoolExecutor has no public call for this before Python 3.14 (``terminate_workers``).
    The workers are ended only once the pool's manager thread has dropped the cancelled cells:
    before 3.12 it marks every cell it still holds as failed when a worker dies, and a cancelled
    one makes it print a traceback (InvalidStateError).  It drops them as soon as ``shutdown``
    wakes it, so the wait is short; it is bounded all the same."""
    manager = getattr(pool, "_executor_manager_thread", None)
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 2.0
    while manager is not None and manager.is_alive() and time.monotonic() < deadline:
        held = list(getattr(manager, "pending_work_items", {}).values())
        if not any(item.future.cancelled() for item in held):
            break
        time.sleep(0.001)
    for process in workers:
        process.terminate()


class RayExecutor:
    """Cells as Ray tasks. ``address`` names an existing cluster (``host:port``, ``auto`` or
    ``ray://host:port``); without it a new local Ray instance is started with ``workers`` CPUs
    (all of this machine's by default) and shut down at the end. A task whose worker process or
    node dies is retried by Ray (``max_retries``); an exception raised by a cell is not retried
    (it is reported)."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None, max_retries: int = 3) -> None:
        self.address = address
        self.workers = workers
        self.max_retries = max_retries
        self._owner = False
        self._remote: Any = None

    def __enter__(self) -> RayExecutor:
        import ray

        if not ray.is_initialized():
            env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": "warning",
                                       "runtime_env": {"env_vars": env_vars} if env_vars else None}
            if self.address is None:
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, **options)
            else:
                ray.init(address=self.address, **options)
            self._owner = True
        self._remote = ray.remote(execute)
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        import ray

        if self._owner:
            ray.shutdown()
            self._owner = False

    def map_unordered(self, fn: CellFunction, cells: Sequence[Cell]) -> Iterator[tuple[int, Outcome]]:
        import ray

        shared: dict[int, Any] = {}  # inputs shared by several cells go into the object store once
        refs = {}
        for index, cell in enumerate(cells):
            inputs = cell.inputs
            if inputs is not None:
                inputs = shared.setdefault(id(cell.inputs), ray.put(cell.inputs))
            task = self._remote.options(num_cpus=cell.cpus, num_gpus=cell.gpus, max_retries=self.max_retries)
            refs[task.remote(fn, cell.config, inputs)] = index
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        outcome = _failed(f"Ray could not run the cell: {type(error).__name__}: {error}")
                    yield refs[ref], outcome
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


Executor = Any  # LocalExecutor | RayExecutor: enter, map_unordered, exit


# ----------------------------------------------------------------------------- running a sweep

@dataclass
class Failure:
    """A cell that did not finish: its configuration and the error (with the worker's traceback)."""

    label: str
    config: Mapping[str, Any]
    error: str

    def headline(self) -> str:
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "unknown error"


@dataclass
class SweepResult:
    """The finished cells of one stage (by key) and what happened to the others."""

    results: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    done: int = 0
    skipped: int = 0

    def merge(self, other: SweepResult) -> SweepResult:
        return SweepResult({**self.results, **other.results}, self.failures + other.failures,
                           self.done + other.done, self.skipped + other.skipped)


class Sweep:
    """Runs the cells of one experiment into ``out``: skips the finished ones, runs the others on
    ``executor``, writes each as it finishes, and counts done / failed / skipped on a tqdm bar."""

    def __init__(self, experiment: str, out: Path, executor: Executor, progress: bool = True) -> None:
        self.experiment = experiment
        self.out = Path(out)
        self.executor = executor
        self.progress = progress
        self.store = CellStore(self.out, experiment)

    def key(self, cell: Cell) -> str:
        return cell_key(self.experiment, cell.config)

    def run(self, fn: CellFunction, cells: Sequence[Cell], desc: Optional[str] = None) -> SweepResult:
        from tqdm import tqdm

        unique: dict[str, Cell] = {}
        for cell in cells:
            unique.setdefault(self.key(cell), cell)
        outcome = SweepResult()
        todo_keys: list[str] = []
        for key, cell in unique.items():
            finished, result = self.store.load(key, cell.config)
            if finished:
                outcome.results[key] = result
                outcome.skipped += 1
            else:
                todo_keys.append(key)
        bar = tqdm(total=len(unique), initial=outcome.skipped, desc=desc or self.experiment, unit="cell",
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True)
        self._postfix(bar, outcome)
        todo = [unique[key] for key in todo_keys]
        try:
            for index, result in self.executor.map_unordered(fn, todo) if todo else ():
                key, cell = todo_keys[index], todo[index]
                self._record(key, cell, result, outcome)
                self._postfix(bar, outcome)
                bar.update(1)
        finally:
            bar.close()
        return outcome

    def _record(self, key: str, cell: Cell, result: Outcome, outcome: SweepResult) -> None:
        if result.ok and result.version != _version():
            outcome.failures.append(Failure(cell.label, cell.config, (
                f"the worker {result.host} runs fairkernels {result.version}, this driver {_version()}: "
                "install the same version on every node")))
        elif result.ok:
            try:
                outcome.results[key] = self.store.save(key, cell, result.text, result)
                outcome.done += 1
            except OSError as error:  # e.g. a full disk: the cell is lost, the sweep goes on
                outcome.failures.append(Failure(cell.label, cell.config,
                                                f"could not write {self.store.path(key)}: {error}"))
        else:
            outcome.failures.append(Failure(cell.label, cell.config, result.text))

    @staticmethod
    def _postfix(bar: Any, outcome: SweepResult) -> None:
        bar.set_postfix_str(f"done {outcome.done}, failed {len(outcome.failures)}, skipped {outcome.skipped}",
                            refresh=False)


def report_failures(out: Path, result: SweepResult, stream: Any = None) -> int:
    """Prints the failed cells (configuration and error) and writes ``<out>/failures.json``;
    returns the command's exit status (1 when any cell failed, else 0)."""
    stream = stream or sys.stderr
    path = Path(out) / "failures.json"
    if not result.failures:
        if path.exists():
            path.unlink()  # an earlier run's failures are resolved
        return 0
    total = result.done + result.skipped + len(result.failures)
    print(f"{len(result.failures)} of {total} cells failed; the others are saved in {Path(out) / 'cells'}. "
          f"Rerunning the same command runs only the missing cells. Failed cells:", file=stream)
    for failure in result.failures:
        print(f"  [{failure.label}] {failure.headline()}", file=stream)
    write_json(path, [{"label": f.label, "config": f.config, "error": f.error} for f in result.failures])
    print(f"configurations and tracebacks: {path}", file=stream)
    return 1


# ----------------------------------------------------------------------------- command-line flags

def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every experiment command shares: output folder, executor, workers, quiet."""
    group = parser.add_argument_group("running the grid")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder; finished cells are kept in OUT/cells and a rerun with the same "
                            "--out runs only the missing ones (default: a new folder under ./runs/)")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: a process pool on this machine (default); ray: Ray tasks "
                            "(pip install 'fairkernels[ray]')")
    group.add_argument("--workers", type=positive_int, default=None,
                       help="local: worker processes; ray without --ray-address: CPUs of the local Ray "
                            "instance (default: this machine's usable CPUs)")
    group.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="an existing Ray cluster (host:port, auto or ray://host:port); without it "
                            "--executor ray starts a local instance")
    group.add_argument("--quiet", action="store_true", help="no progress bars or tables")


def output_dir(args: argparse.Namespace, experiment: str) -> Path:
    """``--out``, or a new folder ``./runs/<experiment>-<time>``; created and checked writable."""
    if args.out is not None:
        return prepare_output_dir(args.out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{experiment}-{stamp}"
    suffix = 1
    while path.exists():
        path = Path("runs") / f"{experiment}-{stamp}-{suffix}"
        suffix += 1
    return prepare_output_dir(path)


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor the flags ask for; raises UsageError for flags that do not fit together."""
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--executor ray needs Ray: pip install 'fairkernels[ray]'")
        return RayExecutor(args.ray_address, args.workers)
    return LocalExecutor(args.workers or usable_cpus())


def group_label(values: Mapping[str, Any], varied: Sequence[str]) -> str:
    """'name=value,...' over the varied axes (a folder name and a table label)."""
    return ",".join(f"{name}={_short(values[name])}" for name in varied)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
