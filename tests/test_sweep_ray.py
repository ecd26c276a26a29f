"""The three experiments through a real local Ray cluster (a head node and one worker node,
one CPU each, started by this module) against the local process pool: identical outputs; a
Ray worker process killed mid-sweep; a failing cell; the CLI pointed at the cluster by address.

Ray rewrites 127.0.0.1 to this machine's own interface address when it starts multi-node
clusters on Linux, so the nodes listen on that address (still this machine only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster per module: not under the sanitizer run of CI
from ray.cluster_utils import Cluster  # noqa: E402

from fairkernels.experiments import sweep  # noqa: E402
from fairkernels.experiments.ofs import cli as ofs_cli  # noqa: E402
from sweep_helpers import assert_same_outputs, run_cli  # noqa: E402

OFS = ["ofs", "--seeds", "2", "--horizon", "300", "--grid", "11", "--cohort", "200", "--eta-scales", "1",
       "--bound", "ucb1", "hoeffding"]
CAUSALRM = ["causalrm", "--quick", "--alphas", "0.5", "1", "--noise", "0,0", "--pool", "400", "--test", "400",
            "--epochs", "2", "--patience", "1"]


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node on this machine; this process is connected as the driver."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False, logging_level="warning")
        nodes.wait_for_nodes()
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_cluster_has_two_nodes(cluster):
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2 and sum(n["Resources"]["CPU"] for n in alive) == 2


def test_ofs_grid_through_ray_equals_the_local_pool(cluster, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_cli([*OFS, "--workers", "2", "--out", str(local)], capsys)[0] == 0
    code, _, stderr = run_cli([*OFS, "--executor", "ray", "--out", str(remote)], capsys)
    assert code == 0 and "done 4, failed 0, skipped 0" in stderr
    assert_same_outputs(local, remote, ["sweep.csv", "bound=hoeffding/results.csv", "bound=ucb1/sweep.png"])
    assert ray.is_initialized()  # the executor reused this driver's session and left it open


def test_causalrm_grid_through_ray_equals_the_local_pool(cluster, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_cli([*CAUSALRM, "--workers", "2", "--out", str(local)], capsys)[0] == 0
    assert run_cli([*CAUSALRM, "--executor", "ray", "--out", str(remote)], capsys)[0] == 0
    assert_same_outputs(local, remote, ["results.csv", "summary.csv", "tables.md", "auroc_vs_alpha.png"])


def test_grpo_grid_through_ray_equals_the_local_pool(cluster, tmp_path):
    from fairkernels.experiments.grpo.run import run_experiments
    from test_grpo_experiment import tiny_config

    local, remote = tmp_path / "local", tmp_path / "ray"
    cfg = tiny_config()
    _, by_pool = run_experiments([("", cfg)], local, sweep.LocalExecutor(2), quiet=True)
    _, by_ray = run_experiments([("", cfg)], remote, sweep.RayExecutor(), quiet=True)
    from fairkernels.experiments.grpo.arms import ARMS

    rl_arms = sum(1 for arm in ARMS.values() if arm is not None)
    assert by_pool.done == by_ray.done == 1 + 1 + rl_arms * 2 and not by_ray.failures  # 1 fit, base, RL arms x 2
    assert_same_outputs(local, remote, ["runs.csv", "summary.csv", "passk.png", "results.json"])


def test_a_failing_cell_on_ray_is_reported_and_the_others_finish(cluster, tmp_path):
    from fairkernels.cli import build_parser

    good = ofs_cli.cells_of(ofs_cli.groups_from_args(build_parser().parse_args(OFS[:-1]))[0])
    bad = sweep.Cell({**good[0].config, "alpha": -1.0}, "alpha=-1,seed=0")
    with sweep.RayExecutor() as executor:
        result = sweep.Sweep("ofs", tmp_path, executor, progress=False).run(ofs_cli.run_cell, [*good, bad])
    assert result.done == len(good) and len(result.failures) == 1
    assert result.failures[0].config["alpha"] == -1.0 and "alpha" in result.failures[0].headline()


def _running_cell_workers(cluster) -> list[int]:
    """PIDs of the worker processes that are running a cell now (children of the raylets of
    the nodes this module started, titled ``ray::execute`` while they run a task)."""
    pids = []
    for node in cluster.list_all_nodes():
        raylet = node.all_processes["raylet"][0].process.pid
        for task in os.listdir(f"/proc/{raylet}/task"):
            with open(f"/proc/{raylet}/task/{task}/children") as handle:
                for child in handle.read().split():
                    try:
                        with open(f"/proc/{child}/cmdline", "rb") as cmd:
                            title = cmd.read().split(b"\0")[0]
                    except OSError:
                        continue
                    if title.startswith(b"ray::execute"):
                        pids.append(int(child))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes in /proc")
def test_a_killed_ray_worker_is_retried_and_the_results_are_identical(cluster, tmp_path, capsys):
    argv = ["ofs", "--seeds", "12", "--horizon", "12000", "--no-plots", "--quiet"]
    remote = tmp_path / "ray"
    outcome: dict[str, int] = {}
    driver = threading.Thread(target=lambda: outcome.update(code=run_cli(
        [*argv, "--executor", "ray", "--out", str(remote)], capsys)[0]))
    driver.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and driver.is_alive() and time.monotonic() < deadline:
        workers = _running_cell_workers(cluster)
        if workers and list((remote / "cells").glob("*.json")):  # mid-sweep: some cells done, one running
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.005)
    driver.join(timeout=180)
    assert killed is not None, "no running cell was found to kill"
    assert not driver.is_alive() and outcome["code"] == 0
    assert len(list((remote / "cells").glob("*.json"))) == 12
    local = tmp_path / "local"
    assert run_cli([*argv, "--workers", "2", "--out", str(local)], capsys)[0] == 0
    assert_same_outputs(local, remote, ["results.csv", "results.json"])


def test_cli_pointed_at_the_cluster_by_address(cluster, tmp_path, capsys):
    """What the README describes: a separate driver process joins an existing cluster."""
    remote, local = tmp_path / "ray", tmp_path / "local"
    argv = ["ofs", "--quick", "--seeds", "2", "--horizon", "300", "--no-plots"]
    run = subprocess.run([sys.executable, "-m", "fairkernels", *argv, "--executor", "ray", "--ray-address",
                          cluster.address, "--out", str(remote)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run_cli([*argv, "--workers", "1", "--out", str(local)], capsys)[0] == 0
    assert_same_outputs(local, remote, ["results.csv"])
    assert Path(remote / "cells").is_dir()
