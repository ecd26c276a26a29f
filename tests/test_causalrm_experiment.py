"""Fast checks of the CausalRM experiment's pieces (the full run is `fairkernels causalrm`)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from fairkernels.experiments.causalrm.simulate import simulate  # noqa: E402
from fairkernels.experiments.causalrm.train import TrainConfig, methods, run_cell  # noqa: E402


def test_simulation_matches_the_protocol():
    sim = simulate(0, 0.2, 0.2, 0.1, pool=20_000, test=5_000)
    observed = np.concatenate([sim.train.observed, sim.val.observed])
    clean = np.concatenate([sim.train.clean, sim.val.clean])
    noisy = np.concatenate([sim.train.noisy, sim.val.noisy])
    assert abs(observed.mean() - 0.2) < 0.01  # about 20% observed
    assert abs(clean.mean() - 0.4) < 0.02  # level >= 4: 40% positive
    assert clean[observed].mean() > 0.8  # alpha = 0.2: observation favours high ratings
    assert np.all(noisy[~observed] == 0)
    flips_1_to_0 = np.mean(noisy[observed & (clean == 1)] == 0)
    assert abs(flips_1_to_0 - 0.1) < 0.03  # rho01 = P(0 | 1)
    assert sim.test.observed.all() and np.array_equal(sim.test.noisy, sim.test.clean)
    unbiased = simulate(0, 1.0, 0.0, 0.0, pool=20_000, test=100)
    o = np.concatenate([unbiased.train.observed, unbiased.val.observed])
    assert abs(np.concatenate([unbiased.train.clean, unbiased.val.clean])[o].mean() - 0.4) < 0.03


def test_run_cell_smoke():
    sim = simulate(1, 0.5, 0.1, 0.2, pool=1500, test=1000)
    records = run_cell(sim, 0.1, 0.2, TrainConfig(max_epochs=2, patience=1), seed=3)
    assert [r["method"] for r in records] == [m.name for m in methods()]
    for r in records:
        assert np.isfinite(r["nll"]) and 0 <= r["auroc"] <= 1 and 1 <= r["epochs"] <= 2


def test_cli_registers_causalrm():
    from fairkernels.cli import build_parser

    args = build_parser().parse_args(["causalrm", "--quick", "--out", "somewhere"])
    assert args.quick and callable(args.func)
