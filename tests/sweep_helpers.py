"""Helpers of the sweep tests: run the real CLI in-process and compare output folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import pytest

from fairkernels.cli import main

#: JSON fields that describe the run rather than the results (timings, date, command line,
#: the executor that ran the cells); everything else must be identical across executors.
RUN_FIELDS = frozenset({"elapsed_s", "elapsed_seconds", "wall_seconds", "date", "command", "executor", "workers",
                        "fit_seconds", "seconds", "t_step_ms", "t_advantage_ms"})


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``fairkernels ARGV`` run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def result_files(folder: Path) -> list[Path]:
    """The output files of a run (not the cells), relative to its folder."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and "cells" not in p.parts and p.name != "failures.json")


def without_run_fields(value):
    if isinstance(value, dict):
        return {k: without_run_fields(v) for k, v in value.items() if k not in RUN_FIELDS}
    if isinstance(value, list):
        return [without_run_fields(v) for v in value]
    return value


def strict_load(path: Path):
    """json.load that fails on NaN / Infinity tokens (strict JSON)."""
    def reject(token: str):
        raise AssertionError(f"{path} holds the non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def assert_same_outputs(a: Path, b: Path, expected: Iterable[str] = ()) -> None:
    """Every CSV, PNG and Markdown file equal bit for bit; every JSON file equal but for the
    fields that describe the run."""
    files = result_files(a)
    assert files == result_files(b)
    for name in expected:
        assert Path(name) in files, f"{name} missing from {a}"
    for rel in files:
        if rel.suffix == ".json":
            assert without_run_fields(strict_load(a / rel)) == without_run_fields(strict_load(b / rel)), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
