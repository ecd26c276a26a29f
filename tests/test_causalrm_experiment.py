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


# ---- the estimator family in the experiment (issue 14) ----------------------------------------

from fairkernels.experiments.causalrm import report  # noqa: E402
from fairkernels.experiments.causalrm.methods import (  # noqa: E402
    BASELINES,
    ESTIMATOR_CHOICES,
    NEW_ESTIMATORS,
)


def test_default_methods_cover_every_estimator_with_true_and_fitted_propensities():
    names = [m.name for m in methods()]
    assert len(names) == len(set(names))
    used = {m.estimator for m in methods()} | {m.imputer for m in methods()}
    assert set(ESTIMATOR_CHOICES) <= used
    for est in NEW_ESTIMATORS:
        kinds = {m.propensity for m in methods() if m.estimator == est}
        assert kinds == {"true", "fitted"}, est
    assert {m.correction for m in methods()} == {"backward", "forward", "classwise"}


def test_estimators_filter_keeps_the_baselines_and_rejects_unknown_names():
    ms = methods(["sndr"], corrections=())
    names = [m.name for m in ms]
    assert set(BASELINES) <= set(names) and "oracle" in names and "pos_only" in names
    assert {m.estimator for m in ms} == {"naive", "dr", "sndr"}
    assert "ips" not in names and "CausalRM-dr[forward]" not in names
    with pytest.raises(ValueError, match="estimators"):
        methods(["dr", "bogus"])
    with pytest.raises(ValueError, match="corrections"):
        methods(["dr"], corrections=("sideways",))


def test_hyper_parameter_lists_give_one_method_each():
    ms = methods(["switch_dr", "dros", "sg_ips"], tau=(2.0, 5.0), dros_lambda=(10.0, 100.0, 1000.0),
                 sg_lambda=(0.0, 0.5))
    taus = sorted(m.tau for m in ms if m.estimator == "switch_dr" and m.propensity == "true")
    assert taus == [2.0, 5.0]
    assert sorted(m.lambda_ for m in ms if m.estimator == "dros" and m.propensity == "true") == [10.0, 100.0, 1000.0]
    assert sorted(m.lambda_ for m in ms if m.estimator == "sg_ips" and m.propensity == "fitted") == [0.0, 0.5]


def test_run_cell_trains_every_new_method_and_the_joint_imputers():
    sim = simulate(2, 0.2, 0.2, 0.1, pool=1500, test=800)
    ms = methods()
    records = run_cell(sim, 0.2, 0.1, TrainConfig(max_epochs=2, patience=1), seed=5, ms=ms)
    assert [r["method"] for r in records] == [m.name for m in ms]
    for r in records:
        assert np.isfinite(r["nll"]) and np.isfinite(r["rmse"]) and 0 <= r["auroc"] <= 1, r


def test_joint_imputer_gets_only_its_objective_gradient():
    """The estimator sees the imputer's logits detached and the objective the method's logits
    detached: the method's gradient equals that of the estimator alone, the imputer's that of
    the objective alone."""
    import torch

    from fairkernels.experiments.causalrm.methods import Method
    from fairkernels.experiments.causalrm.train import RowData, loss_functions, method_loss
    from fairkernels.torch import CausalRMLoss

    ms = [Method("CausalRM-dr[dr_jl imputer]", "dr", True, "true", imputer="dr_jl")]
    fns = loss_functions(ms, 0.2, 0.1, TrainConfig())
    assert fns[0].imputer_slot == 1
    g = torch.Generator().manual_seed(0)
    n = 64
    data = RowData(torch.randint(0, 2, (1, n), generator=g).float(), torch.rand(1, n, generator=g) < 0.5,
                   torch.rand(1, n, generator=g) * 0.9 + 0.1, None)
    logits = torch.randn(2, n, generator=g, dtype=torch.float32, requires_grad=True)
    rows = torch.arange(n)
    method_loss(0, fns[0], logits.unbind(0), rows, data, True).backward()
    f = logits.detach()[0].clone().requires_grad_(True)
    h = logits.detach()[1].clone().requires_grad_(True)
    args = (data.labels[0], data.observed[0], data.propensity[0])
    CausalRMLoss("bce", "dr", 0.2, 0.1, 0.1, "mean", True)(f, *args, h.detach()).backward()
    CausalRMLoss("bce", "dr_jl", 0.2, 0.1, 0.1, "mean", False)(f.detach(), *args, h).backward()
    torch.testing.assert_close(logits.grad[0], f.grad)
    torch.testing.assert_close(logits.grad[1], h.grad)
    assert h.grad.abs().sum() > 0


def _records(values: dict[str, list[float]]) -> list[dict]:
    setting = dict(alpha=0.2, rho10=0.1, rho01=0.2, p_min=0.1)
    return [{**setting, "seed": s, "method": m, "nll": v[s], "rmse": v[s], "auroc": 1 - v[s], "epochs": 1}
            for m, v in values.items() for s in range(len(v))]


def test_paired_difference_is_seed_by_seed():
    records = _records({"naive": [1.0, 2.0, 3.0], "a": [0.9, 1.8, 3.3]})
    d = report.paired(records, "a", "naive", "nll")[(0.2, 0.1, 0.2, 0.1)]
    diffs = np.array([-0.1, -0.2, 0.3])
    assert d["diff"] == pytest.approx(diffs.mean())
    assert d["se"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert d["better"] == 2 and d["n"] == 3
    from scipy.stats import t

    assert d["high"] - d["diff"] == pytest.approx(t.ppf(0.975, 2) * d["se"])
    auroc = report.paired(records, "a", "naive", "auroc")[(0.2, 0.1, 0.2, 0.1)]
    assert auroc["better"] == 2  # higher AUROC is better: the same two seeds


def test_recommendation_picks_the_best_and_the_statistically_tied():
    records = _records({
        "naive": [1.0, 1.1, 0.9, 1.05, 0.95],
        "CausalRM-dr": [0.8, 0.85, 0.75, 0.82, 0.78],
        "a": [0.5, 0.52, 0.49, 0.51, 0.5],        # best
        "b": [0.52, 0.50, 0.52, 0.50, 0.53],      # as good within noise
        "oracle": [0.1, 0.1, 0.1, 0.1, 0.1],      # a reference: never recommended
    })
    summary = report.summarise(records)
    names = ["naive", "CausalRM-dr", "a", "b", "oracle"]
    rec = report.recommendation(records, summary, names, (0.2, 0.1, 0.2, 0.1), "nll")
    assert rec["best"] == "a" and rec["tied"] == ["b"]
    assert rec["against"]["naive"]["better"] == 5 and rec["against"]["CausalRM-dr"]["diff"] < 0
    text = report.comparison_report(records, summary, names)
    assert "| 0.2 | 0.1, 0.2 | 0.1 | a |" in text
    by_auroc = report.recommendation(records, summary, names, (0.2, 0.1, 0.2, 0.1), "auroc")
    assert by_auroc["best"] == "a"


def test_cli_method_flags():
    from fairkernels.cli import build_parser
    from fairkernels.experiments.causalrm.cli import _config, method_list

    args = build_parser().parse_args(["causalrm", "--quick", "--estimators", "dros", "sg_dr", "--dros-lambda", "3",
                                      "30", "--sg-lambda", "0", "1", "--corrections"])
    config = _config(args)
    assert config["estimators"] == ["dros", "sg_dr"] and config["corrections"] == []
    names = [m.name for m in method_list(config)]
    assert "CausalRM-dros(lambda=30)" in names and "CausalRM-sg_dr(lambda=1) (fitted p)" in names
    assert not any("[" in n for n in names)
    default = _config(build_parser().parse_args(["causalrm", "--quick"]))
    assert default["estimators"] == list(ESTIMATOR_CHOICES) and default["corrections"] == ["forward", "classwise"]
    for bad in (["--sg-lambda", "1.5"], ["--estimators", "bogus"], ["--tau", "0"], ["--estimators", "dr", "dr"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["causalrm", *bad])


def test_plots_split_the_paper_methods_from_the_family_beyond_it():
    from fairkernels.experiments.causalrm.methods import split_for_plots

    paper, beyond = split_for_plots(methods())
    assert paper == [m.name for m in methods(["naive", "ips", "snips", "dr"], corrections=())]
    assert len(paper) == 14 and beyond[:2] == list(BASELINES)
    assert not any("fitted" in name for name in beyond)
    assert {n for n in beyond[2:]} == {m.name for m in methods() if m.propensity == "true"} - set(paper)


def test_a_method_trains_the_same_whatever_else_shares_the_batch():
    """Per-method seeds, a shared batch order and per-network losses: the records of the
    methods two method sets share are bit-identical (a sensitivity run can be read beside the
    default run)."""
    sim = simulate(3, 0.2, 0.2, 0.1, pool=1200, test=600)
    config = TrainConfig(max_epochs=3, patience=1)
    small = run_cell(sim, 0.2, 0.1, config, seed=9, ms=methods(["sg_dr"], sg_lambda=(0.1,), corrections=()))
    large = run_cell(sim, 0.2, 0.1, config, seed=9, ms=methods(sg_lambda=(0.1, 0.5)))
    by_name = {r["method"]: r for r in large}
    assert len(small) < len(large)
    for r in small:
        assert r == by_name[r["method"]], r["method"]
