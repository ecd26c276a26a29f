"""Memory layouts on every array argument of every public entry point.

For each entry point and each array argument, every layout of tests/layouts.py is fed to that
argument (the others contiguous) and the result must equal, bit for bit, the same call on
fresh contiguous copies; inputs must be left unmodified.  Outputs (``out=``) either receive the
result (directly or through one copy) or raise the documented ValueError.  A hypothesis test
then draws layouts, dtypes and shapes for all arguments of a call at once.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fairkernels
from fairkernels.bandits import GridBounds, PrimalDual, run_episodes
from fairkernels.propensity import IMPUTED_ESTIMATORS
from layouts import (
    NUMPY_INPUT_LAYOUTS_1D,
    NUMPY_INPUT_LAYOUTS_2D,
    TORCH_INPUT_LAYOUTS_1D,
    TORCH_INPUT_LAYOUTS_2D,
    assert_bitwise_equal,
    assert_unmodified,
    contiguous_copy,
    numpy_layout,
    snapshot,
    torch_layout,
)

N, T, G = 12, 5, 4


def _advantage_inputs(dtype=np.float32, mask_dtype=bool, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 3, N).astype(dtype)
    rewards[3] = np.nan
    return {
        "rewards": rewards,
        "group_ids": np.array([7, 3, 7, 9, 3, 3, 9, 7, 9, 7, 3, 9], dtype=np.int64),
        "token_logp": rng.normal(size=(N, T)).astype(dtype),
        "mask": (rng.random((N, T)) < 0.7).astype(mask_dtype),
        "seq_logp": rng.normal(size=N).astype(dtype),
    }


# The two calls that between them take every array argument of group_advantages.
ADVANTAGE_CALLS = {
    "token": (("rewards", "group_ids", "token_logp", "mask"), dict(beta_rank=0.25)),
    "sequence": (("rewards", "group_ids", "seq_logp"), dict(beta_rank=0.5, baseline="loo")),
}
ADVANTAGE_ARGUMENTS = [(call, name) for call, (names, _) in ADVANTAGE_CALLS.items() for name in names]


def _layouts_for(x: np.ndarray, library: str = "numpy"):
    if library == "numpy":
        return NUMPY_INPUT_LAYOUTS_1D if x.ndim == 1 else NUMPY_INPUT_LAYOUTS_2D
    return TORCH_INPUT_LAYOUTS_1D if x.ndim == 1 else TORCH_INPUT_LAYOUTS_2D


def _check_against_contiguous(function, arguments: dict, **options):
    """function(**arguments) equals function on contiguous copies; arguments unmodified."""
    before = {k: snapshot(v) for k, v in arguments.items()}
    got = function(**arguments, **options)
    expected = function(**{k: contiguous_copy(v) for k, v in arguments.items()}, **options)
    for k, v in arguments.items():
        assert_unmodified(before[k], v)
    return got, expected


@pytest.mark.parametrize("mask_dtype", [bool, np.uint8, np.float32])
@pytest.mark.parametrize("call, argument", ADVANTAGE_ARGUMENTS)
def test_group_advantages_numpy_layouts(call, argument, mask_dtype):
    names, options = ADVANTAGE_CALLS[call]
    base = _advantage_inputs(mask_dtype=mask_dtype)
    for layout in _layouts_for(base[argument]):
        arguments = {k: base[k] for k in names}
        arguments[argument] = numpy_layout(base[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.group_advantages, arguments, **options)
        assert_bitwise_equal(got, expected)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("call, argument", ADVANTAGE_ARGUMENTS)
def test_group_advantages_torch_layouts(call, argument, device):
    torch = pytest.importorskip("torch")
    names, options = ADVANTAGE_CALLS[call]
    base = {k: torch.from_numpy(v).to(device) for k, v in _advantage_inputs().items()}
    for layout in _layouts_for(base[argument].cpu().numpy(), "torch"):
        arguments = {k: base[k] for k in names}
        arguments[argument] = torch_layout(base[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.group_advantages, arguments, **options)
        assert_bitwise_equal(got, expected)


def _multi_reward_inputs(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 3, (N, 3)).astype(dtype) + rng.normal(0, 0.1, (N, 3)).astype(dtype)
    rewards[3, 1] = np.nan
    rewards[5] = np.nan
    return {"rewards": rewards, "reward_weights": np.array([0.5, 2.0, 1.25], dtype),
            "group_ids": _advantage_inputs()["group_ids"]}


MULTI_REWARD_MODES = ("sum_then_normalize", "normalize_then_sum")


@pytest.mark.parametrize("mode", MULTI_REWARD_MODES)
@pytest.mark.parametrize("argument", ["rewards", "reward_weights"])
def test_group_advantages_multi_reward_numpy_layouts(argument, mode):
    base = _multi_reward_inputs()
    for layout in _layouts_for(base[argument]):
        arguments = dict(base)
        arguments[argument] = numpy_layout(base[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.group_advantages, arguments, multi_reward=mode)
        assert_bitwise_equal(got, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MULTI_REWARD_MODES)
@pytest.mark.parametrize("argument", ["rewards", "reward_weights"])
def test_group_advantages_multi_reward_torch_layouts(argument, mode, device):
    torch = pytest.importorskip("torch")
    base = {k: torch.from_numpy(v).to(device) for k, v in _multi_reward_inputs().items()}
    for layout in _layouts_for(base[argument].cpu().numpy(), "torch"):
        arguments = dict(base)
        arguments[argument] = torch_layout(base[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.group_advantages, arguments, multi_reward=mode)
        assert_bitwise_equal(got, expected)


@pytest.mark.parametrize("layout", ["strided", "reversed", "column", "byteswapped"])
def test_one_huge_group_in_a_strided_layout(layout):
    rng = np.random.default_rng(5)
    n = 100_000
    rewards = rng.random(n).astype(np.float32)
    seq_logp = rng.normal(size=n).astype(np.float32)
    got = fairkernels.group_advantages(numpy_layout(rewards, layout), group_size=n,
                                       seq_logp=numpy_layout(seq_logp, layout), beta_rank=0.25)
    expected = fairkernels.group_advantages(rewards, group_size=n, seq_logp=seq_logp, beta_rank=0.25)
    assert_bitwise_equal(got, expected)


def test_the_issue_reproduction_a_column_of_a_reward_matrix():
    s = np.random.default_rng(0).random((8, 3))
    for column in range(3):
        got = fairkernels.group_advantages(s[:, column], group_size=4)
        expected = fairkernels.group_advantages(np.ascontiguousarray(s[:, column]), group_size=4)
        assert_bitwise_equal(got, expected)


@pytest.mark.parametrize("layout", NUMPY_INPUT_LAYOUTS_1D)
def test_empty_rewards_in_every_layout(layout):
    rewards = numpy_layout(np.zeros(0, np.float32), layout)
    assert fairkernels.group_advantages(rewards, group_size=4).shape == (0,)
    ids = numpy_layout(np.zeros(0, np.int64), layout)
    assert fairkernels.group_advantages(rewards, group_ids=ids).shape == (0,)


# ------------------------------------------------------------------------------------------
# Outputs

# Layouts of a writable out= that the kernel cannot write directly: the result arrives through
# one copy.  "alias" shares memory with an input.
OUT_COPIED = ("column", "strided", "reversed", "byteswapped", "unaligned", "field", "fortran", "reversed_rows",
              "reversed_cols", "strided_cols")
OUT_DIRECT = ("contiguous", "offset", "padded", "strided_rows")
OUT_REJECTED = {"readonly": "read-only", "broadcast": "share memory"}


@pytest.mark.parametrize("token_level", [False, True])
def test_out_layouts_numpy(token_level):
    base = _advantage_inputs()
    arguments = {"rewards": base["rewards"], "group_ids": base["group_ids"], "beta_rank": 0.25,
                 "token_logp": base["token_logp"], "mask": base["mask"]}
    if not token_level:
        arguments = {k: arguments[k] for k in ("rewards", "group_ids")}
    expected = fairkernels.group_advantages(**arguments)
    shape = expected.shape
    layouts_2d = set(NUMPY_INPUT_LAYOUTS_2D)
    layouts = [k for k in OUT_COPIED + OUT_DIRECT if (k in layouts_2d) == token_level or k in ("contiguous",
               "byteswapped", "unaligned", "strided_rows" if token_level else "strided")]
    for layout in layouts:
        if token_level and layout not in layouts_2d:
            continue
        if not token_level and layout in ("fortran", "padded", "reversed_rows", "reversed_cols", "strided_rows",
                                          "strided_cols"):
            continue
        out = numpy_layout(np.full(shape, 123.0, np.float32), layout)
        returned = fairkernels.group_advantages(**arguments, out=out)
        assert returned is out, layout
        assert_bitwise_equal(np.array(out), expected)
    for layout, message in OUT_REJECTED.items():
        out = numpy_layout(np.full(shape, 123.0, np.float32), layout)
        if layout == "broadcast":  # a writable zero-stride view (np.broadcast_to's are read-only)
            out = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=shape, strides=(0,) * len(shape))
        before = np.array(out)
        with pytest.raises(ValueError, match=message):
            fairkernels.group_advantages(**arguments, out=out)
        np.testing.assert_array_equal(out, before)


def test_out_with_overlapping_rows_is_rejected():
    base = _advantage_inputs()
    flat = np.zeros(N * T, np.float32)
    overlapping = np.lib.stride_tricks.as_strided(flat, shape=(N, T), strides=(4 * (T - 2), 4))
    with pytest.raises(ValueError, match="share memory"):
        fairkernels.group_advantages(base["rewards"], group_ids=base["group_ids"], mask=base["mask"],
                                     out=overlapping)
    assert not flat.any()


def test_out_read_only_memmap_is_rejected_and_writable_memmap_is_written(tmp_path):
    base = _advantage_inputs()
    expected = fairkernels.group_advantages(base["rewards"], group_ids=base["group_ids"])
    path = tmp_path / "out.bin"
    np.zeros(N, np.float32).tofile(path)
    read_only = np.memmap(path, dtype=np.float32, mode="r", shape=(N,))
    with pytest.raises(ValueError, match="read-only"):
        fairkernels.group_advantages(base["rewards"], group_ids=base["group_ids"], out=read_only)
    assert not np.fromfile(path, np.float32).any()
    writable = np.memmap(path, dtype=np.float32, mode="r+", shape=(N,))
    fairkernels.group_advantages(base["rewards"], group_ids=base["group_ids"], out=writable)
    writable.flush()
    assert_bitwise_equal(np.fromfile(path, np.float32), expected)


def test_out_that_aliases_an_input_gets_the_result_of_the_unaliased_call():
    base = _advantage_inputs()
    expected = fairkernels.group_advantages(base["rewards"], group_size=G, token_logp=base["token_logp"],
                                            mask=base["mask"], beta_rank=0.25)
    logp = base["token_logp"].copy()
    got = fairkernels.group_advantages(base["rewards"], group_size=G, token_logp=logp, mask=base["mask"],
                                       beta_rank=0.25, out=logp)
    assert got is logp
    assert_bitwise_equal(logp, expected)
    rewards = base["rewards"].copy()
    expected = fairkernels.group_advantages(base["rewards"], group_size=G)
    fairkernels.group_advantages(rewards, group_size=G, out=rewards)
    assert_bitwise_equal(rewards, expected)


def test_out_torch_layouts_and_errors():
    torch = pytest.importorskip("torch")
    base = {k: torch.from_numpy(v) for k, v in _advantage_inputs().items()}
    arguments = dict(rewards=base["rewards"], group_ids=base["group_ids"], token_logp=base["token_logp"],
                     mask=base["mask"], beta_rank=0.25)
    expected = fairkernels.group_advantages(**arguments)
    for layout in ("contiguous", "fortran", "padded", "strided_rows", "strided_cols"):
        out = torch_layout(torch.full((N, T), 123.0), layout)
        assert fairkernels.group_advantages(**arguments, out=out) is out
        assert_bitwise_equal(out, expected)
    with pytest.raises(ValueError, match="share memory"):
        fairkernels.group_advantages(**arguments, out=torch.zeros(1, T).expand(N, T))
    with pytest.raises(ValueError, match="requires grad"):
        fairkernels.group_advantages(**arguments, out=torch.zeros(N, T, requires_grad=True))


# ------------------------------------------------------------------------------------------
# Propensity losses


def _propensity_inputs(base="bce", dtype=np.float64, seed=1, n=40):
    rng = np.random.default_rng(seed)
    shape = (n, 2) if base == "bt" else (n,)
    observed = (rng.random(n) < 0.6).astype(np.uint8)
    return {
        "logits": rng.normal(size=shape).astype(dtype),
        "labels": rng.integers(0, 2, n).astype(dtype),
        "observed": observed,
        "propensity": rng.uniform(0.05, 1.0, n).astype(dtype),
        "imputed_logits": rng.normal(size=shape).astype(dtype),
    }


PROPENSITY_OPTIONS = dict(estimator="dr", rho10=0.1, rho01=0.2, p_min=0.1)
HYPER_PARAMETERS = {"switch_dr": dict(tau=4.0), "dros": dict(lambda_=3.0), "sg_ips": dict(lambda_=0.3),
                    "sg_dr": dict(lambda_=0.3)}


@pytest.mark.parametrize("argument", ["observed", "propensity"])
def test_sndr_weight_pass_layouts(argument):
    """sndr reads observed and propensity twice (its weight sum first): every layout of them."""
    inputs = _propensity_inputs("bce")
    for layout in _layouts_for(inputs[argument]):
        arguments = dict(inputs)
        arguments[argument] = numpy_layout(inputs[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.propensity_loss, arguments, estimator="sndr",
                                                  rho10=0.1, rho01=0.2, return_grad=True)
        for g, e in zip(got, expected):
            assert_bitwise_equal(g, e)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("base", ["bce", "bt"])
@pytest.mark.parametrize("argument", ["logits", "labels", "observed", "propensity", "imputed_logits"])
def test_propensity_loss_numpy_layouts(argument, base, reduction):
    inputs = _propensity_inputs(base)
    for layout in _layouts_for(inputs[argument]):
        arguments = dict(inputs)
        arguments[argument] = numpy_layout(inputs[argument], layout)
        got, expected = _check_against_contiguous(fairkernels.propensity_loss, arguments, base=base,
                                                  reduction=reduction, return_grad=True, **PROPENSITY_OPTIONS)
        for g, e in zip(got, expected):
            assert_bitwise_equal(g, e)


@pytest.mark.parametrize("argument", ["logits", "labels", "observed", "propensity", "imputed_logits"])
def test_propensity_loss_torch_layouts_forward_and_backward(argument):
    torch = pytest.importorskip("torch")
    from fairkernels.torch import CausalRMLoss

    loss_fn = CausalRMLoss(base="bt", **PROPENSITY_OPTIONS)
    inputs = {k: torch.from_numpy(v) for k, v in _propensity_inputs("bt").items()}

    def run(arguments):
        leaves = {k: v.detach().requires_grad_() if k in ("logits", "imputed_logits") else v
                  for k, v in arguments.items()}
        loss = loss_fn(**leaves)
        loss.backward()
        return loss.detach(), leaves["logits"].grad, leaves["imputed_logits"].grad

    expected = run({k: v.clone() for k, v in inputs.items()})
    for layout in _layouts_for(inputs[argument].numpy(), "torch"):
        arguments = dict(inputs)
        arguments[argument] = torch_layout(inputs[argument], layout)
        before = snapshot(arguments[argument])
        got = run(arguments)
        assert_unmodified(before, arguments[argument])
        for g, e in zip(got, expected if layout != "broadcast" else run({k: contiguous_copy(v) for k, v in
                                                                            arguments.items()})):
            assert_bitwise_equal(g, e)


# ------------------------------------------------------------------------------------------
# Bandits


B, K, M = 6, 5, 2


def _bandit_inputs(seed=2):
    rng = np.random.default_rng(seed)
    return {
        "arms": rng.integers(0, K, B).astype(np.int64),
        "rewards": rng.random(B),
        "residuals": rng.uniform(-1, 1, (B, M)),
        "weight": rng.uniform(1, 50, B),
    }


def _update_and_state(like, **arguments):
    state = GridBounds(B, K, M, bound="bernstein", like=like)
    state.update(**arguments)
    state.update(**arguments)
    return (*(np.asarray(a) for a in state.state_arrays.values()), np.asarray(state.select("ofs")))


@pytest.mark.parametrize("argument", ["arms", "rewards", "residuals", "weight"])
def test_bandit_update_numpy_layouts(argument):
    inputs = _bandit_inputs()
    expected = _update_and_state(None, **inputs)
    for layout in _layouts_for(inputs[argument]):
        arguments = dict(inputs)
        arguments[argument] = numpy_layout(inputs[argument], layout)
        before = snapshot(arguments[argument])
        got = _update_and_state(None, **arguments)
        assert_unmodified(before, arguments[argument])
        reference = expected if layout != "broadcast" else _update_and_state(
            None, **{k: contiguous_copy(v) for k, v in arguments.items()})
        for g, e in zip(got, reference):
            assert_bitwise_equal(g, e)


@pytest.mark.parametrize("argument", ["arms", "rewards", "residuals", "weight"])
def test_bandit_update_torch_layouts(argument):
    torch = pytest.importorskip("torch")
    like = torch.zeros(0)
    inputs = {k: torch.from_numpy(v) for k, v in _bandit_inputs().items()}
    expected = _update_and_state(like, **inputs)
    for layout in _layouts_for(inputs[argument].numpy(), "torch"):
        arguments = dict(inputs)
        arguments[argument] = torch_layout(inputs[argument], layout)
        got = _update_and_state(like, **arguments)
        reference = expected if layout != "broadcast" else _update_and_state(
            like, **{k: contiguous_copy(v) for k, v in arguments.items()})
        for g, e in zip(got, reference):
            assert_bitwise_equal(g, e)


def _library_layouts(values: np.ndarray, library: str):
    """(layout name, values in that layout) for every layout of the library."""
    if library == "numpy":
        return [(k, numpy_layout(values, k)) for k in _layouts_for(values)]
    torch = pytest.importorskip("torch")
    base = torch.from_numpy(values)
    return [(k, torch_layout(base, k)) for k in _layouts_for(values, "torch")]


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_bandit_select_lambdas_layouts(library):
    rng = np.random.default_rng(3)
    lambdas = rng.random((B, M))
    inputs = _bandit_inputs()
    like = None
    if library == "torch":
        torch = pytest.importorskip("torch")
        like = torch.zeros(0)
        inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    state = GridBounds(B, K, M, like=like)
    for _ in range(K):
        state.update(**inputs)
        inputs["arms"] = (inputs["arms"] + 1) % K
    expected = state.select("primal_dual", contiguous_copy(_library_layouts(lambdas, library)[0][1]))
    for layout, view in _library_layouts(lambdas, library):
        before = snapshot(view)
        reference = expected if layout != "broadcast" else state.select("primal_dual", contiguous_copy(view))
        assert_bitwise_equal(state.select("primal_dual", view), reference)
        assert_unmodified(before, view)


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("argument", ["stream_ids", "fixed_arms", "eta"])
def test_run_episodes_configuration_layouts(argument, library):
    from fairkernels.envs import make_env

    env = make_env("synthetic", grid=11, cohort=200)
    rules = ["ofs", "primal_dual", "fixed", "ucb"] * 2
    values = {"stream_ids": np.arange(8, dtype=np.int64) * 3 + 1, "fixed_arms": np.arange(8, dtype=np.int64) % 11,
              "eta": np.linspace(0.01, 0.1, 8)}
    expected = run_episodes(env, rules, n_rounds=30, n_buckets=3, **values)
    for layout, view in _library_layouts(values[argument], library):
        arguments = dict(values)
        arguments[argument] = view
        got = run_episodes(env, rules, n_rounds=30, n_buckets=3, **arguments)
        reference = expected if layout != "broadcast" else run_episodes(
            env, rules, n_rounds=30, n_buckets=3, **{k: contiguous_copy(v) for k, v in arguments.items()})
        for field in ("reward", "violation", "residual", "pulls", "final_share"):
            assert_bitwise_equal(getattr(got, field), getattr(reference, field))


def _per_group_run(grid):
    """A few rounds of OFS over a per-group ``[K, 2]`` grid: the grid it holds and its choices."""
    policy = fairkernels.OFS(B, grid, M, bound="bernstein")
    inputs = _bandit_inputs(5)
    chosen = []
    for _ in range(4):
        arms = policy.select()
        chosen.append(arms)
        policy.update(arms, inputs["rewards"], inputs["residuals"], weight=inputs["weight"])
    return policy.grid, np.stack(chosen), *(np.asarray(a) for a in policy.state.state_arrays.values())


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_per_group_grid_layouts(library):
    """The per-group grid (a [K, 2] array of threshold pairs, configuration) in every layout."""
    from fairkernels.bandits import product_grid

    pairs = product_grid([0.1, 0.4, 0.8], [0.2, 0.6])
    expected = _per_group_run(pairs)
    if library == "torch":
        torch = pytest.importorskip("torch")
        base = torch.from_numpy(pairs)
        views = [(layout, torch_layout(base, layout)) for layout in _layouts_for(pairs, "torch")]
    else:
        views = [(layout, numpy_layout(pairs, layout)) for layout in _layouts_for(pairs)]
    for layout, view in views:
        before = snapshot(view)
        got = _per_group_run(view)
        assert_unmodified(before, view)
        reference = expected if layout != "broadcast" else _per_group_run(contiguous_copy(view))
        for g, e in zip(got, reference):
            assert_bitwise_equal(g, e)


def _estimator_inputs():
    rng = np.random.default_rng(21)
    n = 40
    groups = (rng.random(n) < 0.5).astype(np.int64)
    groups[:2] = [0, 1]
    y = (rng.random(n) < 0.5).astype(np.float64)
    scores = np.clip(0.4 * y + rng.random(n) * 0.6, 0, 1)
    decisions = (scores >= 0.3).astype(np.int64)  # the first pair of grid [0.3, 0.6] is (0.3, 0.3)
    return {"scores": scores, "decisions": decisions, "y_observed": np.where(decisions == 1, y, np.nan),
            "sensitive_features": groups}


def _estimator_round(scores, decisions, y_observed, sensitive_features):
    """predict + partial_fit of a fresh estimator: its outputs, or the error it raised."""
    est = fairkernels.OnlineThresholdOptimizer(grid=[0.3, 0.6])
    try:
        predicted = est.predict(scores, sensitive_features=sensitive_features)
        est.partial_fit(scores, decisions, y_observed, sensitive_features=sensitive_features)
    except ValueError as error:
        return str(error)
    return predicted, est.history_, est.thresholds_


@pytest.mark.parametrize("argument", ["scores", "decisions", "y_observed", "sensitive_features"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_online_estimator_layouts(argument, library):
    """Every layout of each array argument of OnlineThresholdOptimizer.predict / partial_fit."""
    inputs = _estimator_inputs()
    if library == "torch":
        torch = pytest.importorskip("torch")
        inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
        layouts = [(kind, torch_layout(inputs[argument], kind)) for kind in _layouts_for(_estimator_inputs()[argument],
                                                                                        "torch")]
    else:
        layouts = [(kind, numpy_layout(inputs[argument], kind)) for kind in _layouts_for(inputs[argument])]
    expected = _estimator_round(**inputs)
    assert not isinstance(expected, str), expected
    for kind, view in layouts:
        arguments = dict(inputs)
        arguments[argument] = view
        before = snapshot(view)
        got = _estimator_round(**arguments)
        assert_unmodified(before, view)
        reference = expected if kind != "broadcast" else _estimator_round(
            **{k: contiguous_copy(v) for k, v in arguments.items()})
        if isinstance(reference, str):  # a broadcast first row can make the batch invalid: same error
            assert got == reference, kind
            continue
        assert not isinstance(got, str), (kind, got)
        assert_bitwise_equal(np.asarray(got[0]), np.asarray(reference[0]))
        assert got[1] == reference[1] and got[2] == reference[2], kind


def test_primal_dual_policy_with_torch_state_matches_numpy():
    torch = pytest.importorskip("torch")
    inputs = _bandit_inputs()
    results = []
    for like, convert in ((None, lambda a: a), (torch.zeros(0), torch.from_numpy)):
        policy = PrimalDual(B, K, M, eta=0.3, like=like)
        for _ in range(4):
            arms = policy.select()
            policy.update(arms, convert(inputs["rewards"]), convert(inputs["residuals"]), convert(inputs["weight"]))
        results.append((np.asarray(policy.lambdas), np.asarray(policy.select())))
    for g, e in zip(*results):
        assert_bitwise_equal(g, e)


# ------------------------------------------------------------------------------------------
# What is not an array, or not one we take


def _not_arrays():
    yield [1.0, 0.0, 1.0, 1.0], TypeError, "lists, tuples and scalars are not converted"
    yield 1.0, TypeError, "lists, tuples and scalars are not converted"
    yield np.ma.masked_array(np.zeros(4), mask=[0, 1, 0, 0]), TypeError, "masked array"
    yield np.zeros(4, np.complex64), TypeError, "must have"
    yield np.zeros(4, object), TypeError, "must have"
    yield np.array(1.0), ValueError, "0-d"


@pytest.mark.parametrize("value, error, message", list(_not_arrays()))
def test_every_array_argument_rejects_non_arrays(value, error, message):
    rewards = np.zeros(4)
    calls = {
        "rewards": lambda v: fairkernels.group_advantages(v, group_size=2),
        "seq_logp": lambda v: fairkernels.group_advantages(rewards, group_size=2, seq_logp=v, beta_rank=0.1),
        "reward_weights": lambda v: fairkernels.group_advantages(np.zeros((4, 4)), group_size=2, reward_weights=v),
        "logits": lambda v: fairkernels.propensity_loss(v, rewards, rewards, rewards + 0.5),
        "labels": lambda v: fairkernels.propensity_loss(rewards, v, rewards, rewards + 0.5),
        "observed": lambda v: fairkernels.propensity_loss(rewards, rewards, v, rewards + 0.5),
        "propensity": lambda v: fairkernels.propensity_loss(rewards, rewards, rewards, v),
        "bandit rewards": lambda v: GridBounds(4, 3, 0).update(np.zeros(4, np.int64), v),
    }
    for name, call in calls.items():
        with pytest.raises(error, match=message):
            call(value)
            pytest.fail(f"{name} accepted {value!r}")


def test_torch_tensor_kinds_we_do_not_take():
    torch = pytest.importorskip("torch")
    dense = torch.zeros(4)
    with pytest.raises(TypeError, match="sparse|strided"):
        fairkernels.group_advantages(dense.to_sparse(), group_size=2)
    with pytest.raises(TypeError, match="meta"):
        fairkernels.group_advantages(torch.zeros(4, device="meta"), group_size=2)
    with pytest.raises(TypeError, match="meta"):
        fairkernels.propensity_loss(torch.zeros(4, device="meta"), dense, dense, dense + 0.5)


def test_mixed_libraries_name_both_arguments():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="mask is a torch tensor on cpu but rewards is a numpy array"):
        fairkernels.group_advantages(np.zeros(4), group_size=2, mask=torch.ones(4, 3))
    with pytest.raises(ValueError, match="labels is a numpy array on cpu but logits is a torch tensor"):
        fairkernels.propensity_loss(torch.zeros(4), np.zeros(4), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="rewards is a torch tensor on cpu but count is a numpy array"):
        GridBounds(4, 3, 0).update(np.zeros(4, np.int64), torch.zeros(4, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# All arguments at once, drawn by hypothesis

layouts_1d = st.sampled_from(NUMPY_INPUT_LAYOUTS_1D)
layouts_2d = st.sampled_from(NUMPY_INPUT_LAYOUTS_2D)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_groups=st.integers(0, 5),
    group_size=st.integers(1, 6),
    n_tokens=st.integers(0, 9),
    dtype=st.sampled_from([np.float32, np.float64]),
    mask_dtype=st.sampled_from([bool, np.uint8, "float"]),
    ragged=st.booleans(),
    layouts=st.tuples(layouts_1d, layouts_1d, layouts_2d, layouts_2d),
    out_layout=st.sampled_from(("none", "contiguous", "padded", "fortran", "strided_cols", "byteswapped")),
    seed=st.integers(0, 2**16),
)
def test_group_advantages_all_arguments_drawn_together(n_groups, group_size, n_tokens, dtype, mask_dtype, ragged,
                                                       layouts, out_layout, seed):
    rng = np.random.default_rng(seed)
    n = n_groups * group_size
    rewards = rng.integers(0, 3, n).astype(dtype)
    if n:
        rewards[rng.random(n) < 0.1] = np.nan
    ids = rng.integers(0, max(1, n_groups), n).astype(np.int64)
    token_logp = rng.normal(size=(n, n_tokens)).astype(dtype)
    mask = rng.random((n, n_tokens)) < 0.6
    mask = mask.astype(dtype if mask_dtype == "float" else mask_dtype)
    views = [numpy_layout(a, k) for a, k in zip((rewards, ids, token_logp, mask), layouts)]
    grouping = {"group_ids": views[1]} if ragged else {"group_size": group_size}
    options = dict(token_logp=views[2], mask=views[3], beta_rank=0.3, **grouping)
    before = [snapshot(v) for v in views]
    if out_layout == "none":
        got = fairkernels.group_advantages(views[0], **options)
    else:
        out = numpy_layout(np.zeros((n, n_tokens), dtype), out_layout)
        got = fairkernels.group_advantages(views[0], **options, out=out)
        assert got is out
    for b, v in zip(before, views):
        assert_unmodified(b, v)
    copies = [contiguous_copy(v) for v in views]
    grouping = {"group_ids": copies[1]} if ragged else {"group_size": group_size}
    expected = fairkernels.group_advantages(copies[0], token_logp=copies[2], mask=copies[3], beta_rank=0.3,
                                            **grouping)
    assert_bitwise_equal(np.asarray(got), expected)


# ------------------------------------------------------------------------------------------
# Large views: a broadcast or reversed view of 5e7 rewards used to crash the process


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["broadcast", "reversed"])
def test_large_views_do_not_crash(layout):
    n = 50_000_000
    if layout == "broadcast":
        rewards = np.broadcast_to(np.float32(1.0), (n,))
        expected_value = 0.0  # a constant group has no signal
        got = fairkernels.group_advantages(rewards, group_size=16)
        assert got.shape == (n,) and float(np.abs(got).max()) == expected_value
    else:
        base = np.zeros(n, np.float32)
        base[::2] = 1.0
        rewards = base[::-1]
        got = fairkernels.group_advantages(rewards, group_size=16)
        expected = fairkernels.group_advantages(np.ascontiguousarray(rewards), group_size=16)
        assert_bitwise_equal(got, expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 30),
    base=st.sampled_from(["bce", "bt"]),
    estimator=st.sampled_from(["naive", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sg_ips", "sg_dr", "dr_jl",
                               "mrdr"]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    layouts=st.tuples(layouts_2d, layouts_1d, layouts_1d, layouts_1d, layouts_2d),
    seed=st.integers(0, 2**16),
)
def test_propensity_loss_all_arguments_drawn_together(n, base, estimator, reduction, dtype, layouts, seed):
    inputs = _propensity_inputs(base, dtype, seed, n)
    names = ("logits", "labels", "observed", "propensity", "imputed_logits")
    views = {}
    for name, layout in zip(names, layouts):
        value = inputs[name]
        kind = layout if value.ndim == 2 else layout.replace("_rows", "").replace("fortran", "strided")
        kind = kind if kind in (NUMPY_INPUT_LAYOUTS_2D if value.ndim == 2 else NUMPY_INPUT_LAYOUTS_1D) else "strided"
        views[name] = numpy_layout(value, kind)
    if estimator not in IMPUTED_ESTIMATORS:
        views.pop("imputed_logits")
    got, expected = _check_against_contiguous(fairkernels.propensity_loss, views, base=base, estimator=estimator,
                                              reduction=reduction, rho10=0.1, rho01=0.05, return_grad=True,
                                              **HYPER_PARAMETERS.get(estimator, {}))
    for g, e in zip(got, expected):
        assert_bitwise_equal(g, e)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    learners=st.integers(1, 9),
    arms=st.integers(1, 6),
    constraints=st.integers(0, 3),
    layouts=st.tuples(layouts_1d, layouts_1d, layouts_2d, layouts_1d),
    integer_dtype=st.sampled_from([np.int64, np.int32, np.uint8]),
    seed=st.integers(0, 2**16),
)
def test_bandit_update_all_arguments_drawn_together(learners, arms, constraints, layouts, integer_dtype, seed):
    rng = np.random.default_rng(seed)
    values = {"arms": rng.integers(0, arms, learners).astype(integer_dtype), "rewards": rng.random(learners),
              "residuals": rng.uniform(-1, 1, (learners, constraints)), "weight": rng.uniform(1, 9, learners)}
    views = {k: numpy_layout(v, layout) for (k, v), layout in zip(values.items(), layouts)}

    def run(arguments):
        state = GridBounds(learners, arms, constraints, bound="bernstein")
        state.update(**arguments)
        return [*state.state_arrays.values(), state.select("ofs")]

    before = {k: snapshot(v) for k, v in views.items()}
    got = run(views)
    for k, v in views.items():
        assert_unmodified(before[k], v)
    for g, e in zip(got, run({k: contiguous_copy(v) for k, v in views.items()})):
        assert_bitwise_equal(g, e)
