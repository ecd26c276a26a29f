"""Experiment sweeps: cells per second of each executor on the quick OFS cell.

One sweep = CELLS seeds of ``fairkernels ofs --quick`` (synthetic, K = 51, T = 2,000, n = 2,000:
about 15 ms of compute per cell), run into a fresh output folder each round (no cell is
skipped), through

  inline   the cell function called in this process, one cell after the other (no executor,
           no cell files): the compute the executors distribute;
  local-1  sweep.Sweep with LocalExecutor(1)  (a warm spawn pool of one process);
  local-2  sweep.Sweep with LocalExecutor(2);
  ray-2    sweep.Sweep with RayExecutor() on a local Ray instance of 2 CPUs (started once).

Pools and the Ray instance are started and warmed up outside the timed rounds: the figures are
the steady-state cost of a cell, not start-up. cells/s = CELLS / time; per-cell overhead =
(time - inline time) / CELLS at the executor's parallelism.

    pytest bench/bench_sweep.py --benchmark-json=out.json
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from fairkernels.cli import build_parser
from fairkernels.experiments import sweep
from fairkernels.experiments.ofs import cli as ofs_cli

CELLS = 16
ROUNDS = 5


def quick_ofs_cells() -> list[sweep.Cell]:
    args = build_parser().parse_args(["ofs", "--quick", "--seeds", str(CELLS)])
    (group,) = ofs_cli.groups_from_args(args)
    return ofs_cli.cells_of(group)


@pytest.fixture(scope="module")
def cells() -> list[sweep.Cell]:
    return quick_ofs_cells()


@pytest.fixture
def scratch():
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _fresh_folder(scratch: Path):
    counter = iter(range(10**6))

    def setup():
        return (scratch / f"round-{next(counter)}",), {}

    return setup


def _timed_sweep(benchmark, executor, cells: list[sweep.Cell], scratch: Path) -> None:
    def run(out: Path) -> None:
        result = sweep.Sweep("ofs", out, executor, progress=False).run(ofs_cli.run_cell, cells)
        assert result.done == len(cells) and not result.failures

    run(scratch / "warm-up")  # workers started, modules imported, environment table built
    benchmark.pedantic(run, setup=_fresh_folder(scratch), rounds=ROUNDS, iterations=1)
    benchmark.extra_info["cells"] = len(cells)


@pytest.mark.benchmark(group="sweep-quick-ofs")
def test_inline(benchmark, cells):
    def run() -> None:
        for cell in cells:
            assert sweep.execute(ofs_cli.run_cell, cell.config, None).ok

    run()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["cells"] = len(cells)


@pytest.mark.benchmark(group="sweep-quick-ofs")
@pytest.mark.parametrize("workers", [1, 2])
def test_local(benchmark, cells, scratch, workers):
    with sweep.LocalExecutor(workers) as executor:
        _timed_sweep(benchmark, executor, cells, scratch)


@pytest.mark.benchmark(group="sweep-quick-ofs")
def test_ray(benchmark, cells, scratch):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        with sweep.RayExecutor() as executor:  # reuses the session started above
            _timed_sweep(benchmark, executor, cells, scratch)
    finally:
        ray.shutdown()
