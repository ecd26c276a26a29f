"""The experiment grid machinery (fairkernels.experiments.sweep) with the local executor, and
the experiment commands' CLI contract: flags checked before anything runs, the output folder
checked first, results written atomically, strict JSON, resumable sweeps, failed cells reported.

The Ray executor is tested against a real local cluster in test_sweep_ray.py."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fairkernels
from fairkernels.experiments import outputs, sweep
from fairkernels.experiments.ofs import cli as ofs_cli
from sweep_helpers import assert_same_outputs, run_cli, strict_load

# A tiny OFS grid: 2 settings (bounds) x 2 seeds, 11 thresholds, T = 300: well under a second per cell.
TINY_OFS = ["ofs", "--seeds", "2", "--horizon", "300", "--grid", "11", "--cohort", "200", "--eta-scales", "1",
            "--bound", "ucb1", "hoeffding"]


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


# ----------------------------------------------------------------------------- cell data

def test_cell_data_round_trips_bit_for_bit():
    arrays = [np.array([0.1, -0.0, np.nan, np.inf, -np.inf, 5e-324]), np.arange(6, dtype=np.int64).reshape(2, 3),
              np.array([1.5, np.nan], dtype=">f8"), np.float32([1 / 3, 7]), np.zeros((0, 3)), np.array(2.5),
              np.array([True, False])]
    value = {"floats": [0.1, -0.0, math.nan, math.inf, -math.inf, 1e-310], "int": 2**63, "none": None,
             "nested": {"tuple": (1, "a"), "scalar": np.float32(0.1)}, "arrays": arrays}
    text = sweep.dumps(value)
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))
    back = sweep.loads(text)
    assert [_bits(x) for x in back["floats"]] == [_bits(x) for x in value["floats"]]
    assert back["int"] == 2**63 and back["none"] is None and back["nested"]["tuple"] == [1, "a"]
    assert back["nested"]["scalar"] == float(np.float32(0.1))
    for got, want in zip(back["arrays"], arrays):
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        assert got.flags.writeable  # a copy, not a view of the decoded text


@pytest.mark.parametrize("bad", [np.array([object()]), {1: "x"}, {"$float": "nan", "b": 1}, {3.0}])
def test_cell_data_rejects_what_it_cannot_store_exactly(bad):
    with pytest.raises(TypeError):
        sweep.dumps({"value": bad})


def test_cell_key_is_the_configuration_and_the_version(monkeypatch):
    config = {"a": 0.1, "b": [1, 2], "c": None}
    key = sweep.cell_key("ofs", config)
    assert key == sweep.cell_key("ofs", {"c": None, "b": (1, 2), "a": 0.1})  # order and tuple/list do not matter
    assert key != sweep.cell_key("causalrm", config)
    assert key != sweep.cell_key("ofs", {**config, "a": float(np.nextafter(0.1, 1.0))})
    assert key != sweep.cell_key("ofs", {**config, "c": 0})
    monkeypatch.setattr(fairkernels, "__version__", "999.0")
    assert key != sweep.cell_key("ofs", config)


def test_store_reruns_a_stale_or_damaged_cell(tmp_path, capsys):
    store = sweep.CellStore(tmp_path, "ofs")
    cell = sweep.Cell({"x": 1}, "x=1")
    key = sweep.cell_key("ofs", cell.config)
    outcome = sweep.Outcome(True, sweep.dumps({"y": np.arange(3)}), 0.1, fairkernels.__version__, "here")
    stored = store.save(key, cell, outcome.text, outcome)
    finished, result = store.load(key, cell.config)
    assert finished and np.array_equal(result["y"], stored["y"])
    assert [p.name for p in store.root.iterdir()] == [f"{key}.json"]  # no temporary file is left behind
    record = json.loads(store.path(key).read_text())
    record["config"] = {"x": 2}
    store.path(key).write_text(json.dumps(record))
    assert store.load(key, cell.config) == (False, None)
    store.path(key).write_text(store.path(key).read_text()[:20])
    assert store.load(key, cell.config) == (False, None)
    assert "runs again" in capsys.readouterr().err


# ----------------------------------------------------------------------------- outputs

def test_strict_json_maps_non_finite_to_null():
    text = outputs.strict_json({"a": [math.nan, math.inf, np.float64(-np.inf), 1.5], "b": np.arange(2)})
    assert json.loads(text) == {"a": [None, None, None, 1.5], "b": [0, 1]}
    assert "NaN" not in text and "Infinity" not in text


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "results.csv"
    outputs.write_csv_dicts(target, [{"a": 1, "b": 0.1}])
    assert target.read_bytes() == b"a,b\r\n1,0.1\r\n"  # csv.DictWriter's bytes, as before this helper
    outputs.write_csv_dicts(target, [{"a": 2, "b": 0.2}])
    assert target.read_bytes() == b"a,b\r\n2,0.2\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


# ----------------------------------------------------------------------------- the CLI contract

BAD_FLAGS = [
    (["ofs", "--seeds", "0"], "--seeds"),
    (["ofs", "--horizon", "10", "ten"], "--horizon"),
    (["ofs", "--alpha", "1", "1.0"], "given twice"),
    (["ofs", "--delta", "1"], "--delta"),
    (["ofs", "--cost", "nan"], "--cost"),
    (["ofs", "--eps", "-0.1"], "--eps"),
    (["ofs", "--env", "mars"], "--env"),
    (["ofs", "--grid", "1"], "--grid"),
    (["ofs", "--workers", "0"], "--workers"),
    (["ofs", "--seed", "-1"], "--seed"),
    (["ofs", "--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["causalrm", "--noise", "0.5,0.6"], "--noise"),
    (["causalrm", "--noise", "0.1"], "--noise"),
    (["causalrm", "--alphas", "0"], "--alphas"),
    (["causalrm", "--p-min", "1.5"], "--p-min"),
    (["causalrm", "--pool", "10"], "--pool"),
    (["causalrm", "--threads", "0"], "--threads"),
    (["grpo", "--steps", "0"], "--steps"),
    (["grpo", "--n-train-hard", "-1"], "--n-train-hard"),
    (["grpo", "--eval-samples", "100"], "eval_samples"),
    (["grpo", "--arms", "grpo", "grpo"], "given twice"),
]


@pytest.mark.parametrize("argv,needle", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_error_line_before_anything_runs(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"fairkernels {argv[0]}: error: ") and needle in last
    assert "Traceback" not in stderr and stdout == ""
    assert not (out / "cells").exists()  # nothing ran


def test_unwritable_output_folder_fails_before_any_cell_runs(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, reason in ((a_file / "sub", "cannot write there"), (a_file, "not a directory")):
        code, stdout, stderr = run_cli([*TINY_OFS, "--out", str(out)], capsys)
        assert code == 2 and reason in stderr.strip().splitlines()[-1]
        assert "ofs cells" not in stderr and "Traceback" not in stderr  # no progress bar: no cell started
    if os.geteuid() != 0:  # root writes through permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, stderr = run_cli([*TINY_OFS, "--out", str(locked / "run")], capsys)
        assert code == 2 and "cannot write there" in stderr


def test_json_outputs_are_strict(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(["ofs", "--seeds", "1", "--horizon", "200", "--grid", "11", "--no-plots", "--quiet",
                          "--workers", "1", "--out", str(out)], capsys)
    assert code == 0
    results = strict_load(out / "results.json")
    assert results["rows"][0]["avg_reward_se"] is None  # one seed: no standard error (NaN in the CSV)
    assert ",nan," in (out / "results.csv").read_text()


# ----------------------------------------------------------------------------- local sweeps

def _cell_files(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "cells").glob("*.json")}


@pytest.mark.slow
def test_ofs_grid_is_the_same_with_1_and_2_workers_and_reruns_skip_finished_cells(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli([*TINY_OFS, "--workers", "1", "--out", str(one)], capsys)[0] == 0
    assert run_cli([*TINY_OFS, "--workers", "2", "--out", str(two)], capsys)[0] == 0
    assert_same_outputs(one, two, ["sweep.csv", "bound=ucb1/results.csv", "bound=hoeffding/curves.png"])
    sweep_rows = (one / "sweep.csv").read_text().splitlines()
    assert len(sweep_rows) == 1 + 2 * 4  # 2 settings x (OFS, UCB, PD, oracle)
    assert len(_cell_files(one)) == 4
    # the same settings, run alone, give the same table as inside the grid
    alone = tmp_path / "alone"
    argv = [a for a in TINY_OFS if a != "hoeffding"]
    assert run_cli([*argv, "--workers", "1", "--out", str(alone)], capsys)[0] == 0
    assert (alone / "results.csv").read_bytes() == (one / "bound=ucb1" / "results.csv").read_bytes()
    # a rerun loads every cell (files untouched) and writes the same outputs
    before = _cell_files(one)
    code, stdout, stderr = run_cli([*TINY_OFS, "--workers", "2", "--out", str(one)], capsys)
    assert code == 0 and "cells: 0 run, 4 already done, 0 failed" in stdout
    assert "done 0, failed 0, skipped 4" in stderr
    assert _cell_files(one) == before
    assert_same_outputs(one, two)
    # a changed setting reuses nothing it should not: only the new cells run
    code, stdout, _ = run_cli([*TINY_OFS, "--seeds", "3", "--workers", "2", "--out", str(one)], capsys)
    assert code == 0 and "cells: 2 run, 4 already done" in stdout


def test_a_cell_that_raises_is_reported_and_the_others_finish(tmp_path, capsys):
    from fairkernels.cli import build_parser

    groups = ofs_cli.groups_from_args(build_parser().parse_args([*TINY_OFS[:-1], "--seeds", "3"]))
    good = ofs_cli.cells_of(groups[0])
    bad = sweep.Cell({**good[0].config, "bound": "no-such-bound"}, "bound=no-such-bound,seed=0")
    with sweep.LocalExecutor(2) as executor:
        result = sweep.Sweep("ofs", tmp_path, executor, progress=False).run(ofs_cli.run_cell, [*good, bad])
    assert result.done == 3 and result.skipped == 0 and len(result.failures) == 1
    failure = result.failures[0]
    assert failure.config["bound"] == "no-such-bound" and "ValueError" in failure.headline()
    assert "bound" in failure.headline() and "Traceback" in failure.error
    assert sweep.report_failures(tmp_path, result) == 1
    report = strict_load(tmp_path / "failures.json")
    assert report[0]["label"] == bad.label and report[0]["config"]["bound"] == "no-such-bound"
    stderr = capsys.readouterr().err
    assert "1 of 4 cells failed" in stderr and bad.label in stderr
    with sweep.LocalExecutor(1) as executor:  # a rerun runs only the failed cell
        again = sweep.Sweep("ofs", tmp_path, executor, progress=False).run(ofs_cli.run_cell, [*good, bad])
    assert again.skipped == 3 and again.done == 0 and len(again.failures) == 1


@pytest.mark.slow
def test_driver_killed_mid_sweep_then_rerun_runs_only_the_missing_cells(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "fairkernels", "ofs", "--seeds", "10", "--horizon", "12000", "--workers", "1",
            "--no-plots", "--quiet", "--out", str(out)]
    driver = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "cells").glob("*.json"))) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "no cell finished"
            time.sleep(0.01)
        driver.kill()  # SIGKILL: no clean-up of any kind in the driver
        driver.wait()
    finally:
        driver.kill()
        driver.wait()
        _kill_group(driver.pid)  # the orphaned pool worker, if it outlived its driver
    assert driver.returncode == -signal.SIGKILL
    survived = _cell_files(out)
    assert 2 <= len(survived) < 10, "the kill came after the sweep had finished"
    assert not list(out.glob("results.*"))
    rerun = subprocess.run(argv[:-2] + ["--out", str(out)], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    after = _cell_files(out)
    assert len(after) == 10
    assert {name: after[name] for name in survived} == survived  # finished cells were loaded, not rerun
    fresh = tmp_path / "fresh"
    subprocess.run(argv[:-2] + ["--out", str(fresh), "--workers", "2"], check=True, capture_output=True)
    assert (out / "results.csv").read_bytes() == (fresh / "results.csv").read_bytes()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_sigterm_ends_the_driver_and_its_workers_and_keeps_finished_cells(tmp_path):
    """A batch scheduler's SIGTERM (to the driver only) stops the sweep like Ctrl-C: exit
    status 143, the message, no traceback, no worker left behind, finished cells kept.  (These
    cells are short; the next test shows that a running worker is ended, not waited for.)"""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "fairkernels", "ofs", "--seeds", "10", "--horizon", "12000", "--workers", "2",
            "--no-plots", "--quiet", "--out", str(out)]
    driver = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "cells").glob("*.json"))) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "no cell finished"
            time.sleep(0.01)
        workers = psutil.Process(driver.pid).children(recursive=True)
        assert workers, "the driver has no worker processes"
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=60)
        _, alive = psutil.wait_procs(workers, timeout=20)
    finally:
        _kill_group(driver.pid)
        driver.wait()
    assert driver.returncode == 143, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not alive, f"workers outlived their driver: {alive}"
    assert 2 <= len(_cell_files(out)) < 10, "the signal came after the sweep had finished"


def test_an_interrupted_local_pool_ends_its_running_workers():
    """shutdown() alone would leave a worker in a 60 s cell computing for a minute after the
    sweep was interrupted (and the interpreter's exit would wait for it)."""
    psutil = pytest.importorskip("psutil")
    executor = sweep.LocalExecutor(1)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with executor:
            pool = executor._ensure_pool()
            running = pool.submit(time.sleep, 60)
            pool.submit(time.sleep, 60)  # queued behind it: cancelled, never started
            deadline = time.monotonic() + 60
            while not (running.running() and pool._processes):
                assert time.monotonic() < deadline, "the worker never started"
                time.sleep(0.01)
            workers = [psutil.Process(pid) for pid in pool._processes]
            raise KeyboardInterrupt
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "the worker outlived the interrupted sweep"
    assert time.monotonic() - started < 45
