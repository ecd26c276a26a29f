"""Environments, data loading and the ofs experiment end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fairkernels import datasets
from fairkernels.bandits import EnvTable
from fairkernels.envs import env_facts, make_env
from fairkernels.envs.synthetic import make_table as synthetic_table


def _data_dir() -> Path:
    value = os.environ.get("FAIRKERNELS_DATA_DIR")
    if not value:
        here = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
        if here.is_dir():
            return here.resolve()
        pytest.skip("FAIRKERNELS_DATA_DIR is not set and ../shared/datasets is absent: no local data files")
    return Path(value)


@pytest.fixture
def data_dir(monkeypatch, tmp_path):
    path = _data_dir()
    if not (path / "german.data").is_file() or not (path / "compas-scores-two-years.csv").is_file():
        pytest.skip(f"data files not found in {path}")
    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(path))
    monkeypatch.setenv("FAIRKERNELS_CACHE_DIR", str(tmp_path / "cache"))  # never touch the user's cache
    return path


def test_german_loader(data_dir):
    table = datasets.load_german()
    assert len(table) == 1000
    assert table.numeric.shape == (1000, 6) and table.categorical.shape == (1000, 13)
    assert table.label.sum() == 700  # 700 good, 300 bad
    assert np.mean(table.group == 0) == pytest.approx(0.81, abs=0.005)
    assert "A13" not in table.numeric_names  # age is not a feature


def test_compas_loader_standard_filter(data_dir):
    rows = datasets.load_compas_rows()
    assert len(rows["age"]) == 6172
    assert not {"name", "first", "last", "dob", "id"} & set(rows)  # identifying columns are never kept
    table = datasets.load_compas()
    assert len(table) == 5278
    assert "race" not in table.numeric_names + table.categorical_names
    assert "rows=5278" in repr(table)


def test_checksum_mismatch_and_missing_file(monkeypatch, tmp_path, data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    content = (data_dir / "german.data").read_bytes()
    (bad / "german.data").write_bytes(content[:-10] + b"corrupted\n")
    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(bad))
    with pytest.raises(datasets.DatasetError, match="SHA-256 mismatch.*archive.ics.uci.edu"):
        datasets.data_path("german")
    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(datasets.DatasetError, match="not available locally.*FAIRKERNELS_DATA_DIR"):
        datasets.data_path("compas", download=False)
    # A verified copy in the cache directory is found without FAIRKERNELS_DATA_DIR.
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    shutil.copy(data_dir / "german.data", cache / "german.data")
    monkeypatch.delenv("FAIRKERNELS_DATA_DIR")
    assert datasets.data_path("german", download=False) == cache / "german.data"


def test_data_environments_bind(data_dir):
    """The spec's settings: the constraint binds (unconstrained best threshold infeasible)."""
    for name, options in (("german", {}), ("german", {"cost": 5.0}), ("compas", {})):
        env = make_env(name, **options)
        facts = env_facts(env)
        assert facts.constraint_binds, (name, options)
        assert facts.oracle_arm is not None and facts.n_feasible >= 1
    assert make_env("german").eps == 0.05 and make_env("german", cost=5.0).eps == 0.1
    assert make_env("compas").p0 == pytest.approx(0.398, abs=0.01)


def test_expected_table_is_consistent():
    env = synthetic_table()
    assert isinstance(env, EnvTable) and env.n_arms == 51
    e = env.expected()
    # tau = 0 accepts everyone, tau = 1 (almost) no one.
    assert e["accept_a"][0] == pytest.approx(1.0) and e["accept_b"][-1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(e["accept_a"]) <= 0)
    assert e["reward"][0] == pytest.approx((0.5 * 0.55 + 0.5 * 0.45 - 0.5 * 0.45 - 0.5 * 0.55 + 1) / 2)


def test_ofs_cli_quick(tmp_path, capsys):
    from fairkernels.cli import main

    out = tmp_path / "run"
    assert main(["ofs", "--quick", "--seeds", "2", "--horizon", "600", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "oracle threshold" in printed and "blocking margin" in printed and "OFS" in printed
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,avg_reward,avg_reward_se,cum_violation")
    assert len(lines) == 1 + 6  # OFS, UCB, 3 x PD, oracle
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["horizon"] == 600 and results["version"]
    rows = {r["method"]: r for r in results["rows"]}
    assert rows["OFS"]["cum_violation"] < rows["UCB"]["cum_violation"]
    assert (out / "curves.png").stat().st_size > 0 and (out / "sweep.png").stat().st_size > 0


def test_ofs_cli_missing_data_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from fairkernels.cli import main

    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("FAIRKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _offline)
    assert main(["ofs", "--env", "german", "--quick", "--out", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert "could not download the german data" in message and "FAIRKERNELS_DATA_DIR" in message


def _offline(*args, **kwargs):
    raise OSError("no network in this test")
