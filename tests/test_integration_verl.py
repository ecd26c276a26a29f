"""fairkernels.integrations.verl against verl's own code: verl's compute_advantage on real
DataProto batches, compared with verl's built-in estimators (grpo loop, grpo_vectorized, rloo,
rloo_vectorized), the old_log_probs hook, and the errors.  Skipped without verl installed."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from integration_support import require

pytestmark = pytest.mark.integration

torch = require("torch", "verl")
ray_trainer = require("verl.trainer.ppo.ray_trainer", "verl")
fk_verl = require("fairkernels.integrations.verl", "verl")
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

compute_advantage = ray_trainer.compute_advantage  # looked up at call time below: the hooked one
TOL = 1e-6

# Ragged groups: singletons, pairs, the usual 8 and 16, in a shuffled row order.
GROUP_SIZES = (1, 3, 16, 5, 1, 2, 8, 16, 4, 16)
# Group reward kinds.  The "near" groups are dyadic with std ~1e-6 and ~6e-5 (of the order of
# eps) and sit in groups of 2^k rows: there verl's float32 loop computes the mean exactly, so
# its own rounding is not amplified by 1/std and a 1e-6 comparison is meaningful.  Near-constant
# groups of any size are compared with verl's loop in float64 (test_..._near_constant_...).
KINDS = ("binary", "uniform", "near_eps", "binary", "uniform", "constant", "near_1e-4", "binary", "near_eps", "uniform")


def group_rewards(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    if kind == "binary":
        return rng.integers(0, 2, size).astype(np.float64)
    if kind == "uniform":
        return rng.random(size)
    if kind == "constant":
        return np.full(size, 0.75)
    step = 2.0**-20 if kind == "near_eps" else 2.0**-14
    return 0.25 + step * rng.integers(0, 4, size)


def make_batch(seed: int = 0, n_tokens: int = 24, dtype=torch.float32, empty_rows: bool = True):
    """A DataProto as verl's trainer builds it: the score on the last response token, int64
    response mask, old_log_probs with garbage on padding, string uids, rows shuffled."""
    rng = np.random.default_rng(seed)
    rewards = np.concatenate([group_rewards(rng, k, s) for k, s in zip(KINDS, GROUP_SIZES)])
    uids = np.concatenate([[f"prompt-{g}-{rng.integers(1 << 30):x}"] * s for g, s in enumerate(GROUP_SIZES)])
    order = rng.permutation(len(rewards))
    rewards, uids = rewards[order], uids[order]
    n = len(rewards)
    lengths = rng.integers(1, n_tokens + 1, n)
    if empty_rows:
        lengths[rng.choice(n, 3, replace=False)] = 0
    mask = torch.from_numpy(np.arange(n_tokens)[None, :] < lengths[:, None]).to(torch.int64)
    token_rewards = torch.zeros(n, n_tokens, dtype=dtype)
    rows = np.flatnonzero(lengths > 0)
    token_rewards[rows, lengths[rows] - 1] = torch.from_numpy(rewards[rows]).to(dtype)
    old_log_probs = torch.from_numpy(-3 * rng.random((n, n_tokens))).to(dtype)
    old_log_probs[mask == 0] = float("nan")  # padding is never read
    return DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask, "old_log_probs": old_log_probs},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def copy_of(data: DataProto) -> DataProto:
    return DataProto.from_dict(
        tensors={k: v.clone() for k, v in data.batch.items()},
        non_tensors={k: v.copy() for k, v in data.non_tensor_batch.items()},
    )


def advantages(data: DataProto, estimator: str, norm_adv: bool = True, **options) -> torch.Tensor:
    """verl's compute_advantage on a copy of the batch, as the trainer calls it."""
    config = {"norm_adv_by_std_in_grpo": norm_adv}
    if options:
        config["fairkernels"] = options
    out = ray_trainer.compute_advantage(
        copy_of(data), adv_estimator=estimator, norm_adv_by_std_in_grpo=norm_adv, config=config
    )
    assert torch.equal(out.batch["advantages"], out.batch["returns"])
    return out.batch["advantages"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return float((a.double() - b.double()).abs().max())


# ---- parity with verl's built-in estimators ------------------------------------------------


# verl passes norm_adv_by_std_in_grpo only to its hard-wired "grpo": through the registry
# grpo_vectorized always divides by the std, so it is compared with norm_adv=True only.
@pytest.mark.parametrize(
    "builtin, norm_adv", [("grpo", True), ("grpo", False), ("grpo_vectorized", True)]
)
def test_fk_grpo_matches_verl_grpo(builtin, norm_adv):
    data = make_batch(seed=1)
    ours = advantages(data, "fk_grpo", norm_adv)
    theirs = advantages(data, builtin, norm_adv)
    assert max_diff(ours, theirs) <= TOL
    assert ours.abs().max() > 0.5  # a real signal was compared, not two zero tensors


def near_constant_batch(seed: int, dtype) -> DataProto:
    """Every group near-constant, std ~1e-7 (below eps), not dyadic, ragged sizes."""
    rng = np.random.default_rng(seed)
    data = make_batch(seed=seed, dtype=dtype, empty_rows=False)
    last = data.batch["response_mask"].sum(-1) - 1
    rows = torch.arange(len(last))
    jitter = torch.from_numpy(1e-7 * rng.standard_normal(len(last))).to(dtype)
    data.batch["token_level_rewards"][rows, last] = 0.5 + jitter
    return data


def as_float64(data: DataProto) -> DataProto:
    out = copy_of(data)
    for key in ("token_level_rewards", "old_log_probs"):
        out.batch[key] = out.batch[key].double()
    return out


def test_fk_grpo_near_constant_groups_against_verl_loop_in_float64():
    data = near_constant_batch(7, torch.float64)
    ours, theirs = advantages(data, "fk_grpo"), advantages(data, "grpo")
    assert max_diff(ours, theirs) <= TOL
    assert ours.abs().max() > 0.01  # std ~1e-7 against eps 1e-6: small but non-zero advantages


def test_fk_grpo_float32_is_within_tol_of_the_exact_result():
    """On float32 near-constant groups verl's own float32 loop is off by up to ~1e-2 (its mean
    is rounded, then divided by std + eps ~1e-6); fairkernels accumulates in float64 and stays
    within 1e-6 of verl's loop run in float64 on the same rewards."""
    data = near_constant_batch(8, torch.float32)
    ours = advantages(data, "fk_grpo")
    exact = advantages(as_float64(data), "grpo").float()
    assert max_diff(ours, exact) <= TOL
    assert max_diff(advantages(data, "grpo"), exact) > 100 * TOL  # why the float32 loop is not the yardstick here


def test_fk_drgrpo_matches_verl_grpo_without_std():
    data = make_batch(seed=2)
    assert max_diff(advantages(data, "fk_drgrpo"), advantages(data, "grpo", norm_adv=False)) <= TOL


# verl's rloo loop keeps a singleton's raw score, rloo_vectorized gives it 0: fk_rloo follows
# the loop, and with singleton=zero it gives rloo_vectorized's numbers.
@pytest.mark.parametrize("builtin, singleton", [("rloo", None), ("rloo_vectorized", "zero")])
def test_fk_rloo_matches_verl_rloo(builtin, singleton):
    data = make_batch(seed=3)
    ours = advantages(data, "fk_rloo", **({"singleton": singleton} if singleton else {}))
    assert max_diff(ours, advantages(data, builtin)) <= TOL
    assert ours.abs().max() > 0.1


def test_fk_grpo_on_strided_layouts():
    """The [bs, T] tensors as row-strided and column-strided views (verl's compute_response_mask
    slices the attention mask; a column of a wider tensor is strided in both dims)."""
    data = make_batch(seed=4)
    wide = {k: torch.cat([v, v], dim=1) for k, v in data.batch.items()}  # [bs, 2T]
    n_tokens = data.batch["response_mask"].shape[1]
    strided = DataProto.from_dict(
        tensors={k: v[:, :n_tokens] for k, v in wide.items()}, non_tensors=dict(data.non_tensor_batch)
    )
    assert not strided.batch["response_mask"].is_contiguous()
    interleaved = {k: torch.stack([v, v], dim=2).flatten(1) for k, v in data.batch.items()}  # [bs, 2T]
    every_other = DataProto.from_dict(
        tensors={k: v[:, ::2] for k, v in interleaved.items()}, non_tensors=dict(data.non_tensor_batch)
    )
    assert every_other.batch["token_level_rewards"].stride(1) == 2
    reference = advantages(data, "grpo")
    for layout in (strided, every_other):
        assert max_diff(advantages(layout, "fk_grpo"), reference) <= TOL
        assert max_diff(advantages(layout, "fk_unlikely"), advantages(data, "fk_unlikely")) == 0.0


def test_response_mask_built_by_verl_from_the_attention_mask():
    """Without a response_mask verl derives one (a strided slice of attention_mask)."""
    data = make_batch(seed=5, empty_rows=False)
    n, n_tokens = data.batch["response_mask"].shape
    prompt = torch.ones(n, 5, dtype=torch.int64)
    tensors = {
        "token_level_rewards": data.batch["token_level_rewards"],
        "old_log_probs": data.batch["old_log_probs"],
        "responses": torch.zeros(n, n_tokens, dtype=torch.int64),
        "attention_mask": torch.cat([prompt, data.batch["response_mask"]], dim=1),
    }
    derived = DataProto.from_dict(tensors=tensors, non_tensors=dict(data.non_tensor_batch))
    assert max_diff(advantages(derived, "fk_grpo"), advantages(data, "grpo")) <= TOL


# ---- fk_unlikely: GRPO on rank-reweighted scores, through verl's grpo loop ------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values))
    rank[order] = np.arange(len(values))
    for v in np.unique(values):
        rank[values == v] = rank[values == v].mean()
    return rank


def reweighted_batch(data: DataProto, beta: float) -> DataProto:
    """The authors' reweighting r * (1 - beta * rank / m) by the mean old_log_prob under the
    mask (empty rows: 0), written back into the last-token score for verl's own estimators."""
    mask = data.batch["response_mask"].double().numpy()
    logp = np.where(mask != 0, data.batch["old_log_probs"].double().numpy(), 0.0)
    count = mask.sum(1)
    mean_logp = np.divide(logp.sum(1), count, out=np.zeros(len(count)), where=count > 0)
    scores = data.batch["token_level_rewards"].double().sum(-1).numpy()
    uids = data.non_tensor_batch["uid"]
    reweighted = scores.copy()
    for uid in np.unique(uids):
        rows = np.flatnonzero(uids == uid)
        reweighted[rows] *= 1 - beta * average_ranks(mean_logp[rows]) / len(rows)
    out = copy_of(data)
    tokens = torch.zeros_like(out.batch["token_level_rewards"])
    tokens[:, 0] = torch.from_numpy(reweighted).to(tokens.dtype)  # only the row sum matters
    out.batch["token_level_rewards"] = tokens
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", [0.25, 0.6])
def test_fk_unlikely_is_verl_grpo_on_reweighted_scores(beta, dtype):
    data = make_batch(seed=6, dtype=dtype)
    options = {} if beta == 0.25 else {"beta_rank": beta}  # 0.25 is fk_unlikely's default
    ours = advantages(data, "fk_unlikely", **options)
    theirs = advantages(reweighted_batch(data, beta), "grpo")
    assert max_diff(ours, theirs) <= TOL
    assert max_diff(ours, advantages(data, "fk_grpo")) > 0.05  # the reweighting changed something


def test_fk_unlikely_with_beta_zero_is_fk_grpo():
    data = make_batch(seed=8)
    assert torch.equal(advantages(data, "fk_unlikely", beta_rank=0.0), advantages(data, "fk_grpo"))


def test_other_estimators_take_the_rank_reweighting_too():
    data = make_batch(seed=9)
    ours = advantages(data, "fk_rloo", beta_rank=0.25)
    assert max_diff(ours, advantages(reweighted_batch(data, 0.25), "rloo")) <= TOL


# ---- the hook: documented path, loud failures ------------------------------------------------


def test_fk_unlikely_without_old_log_probs_is_an_error():
    data = make_batch(seed=10)
    data.batch.pop("old_log_probs")
    with pytest.raises(ValueError, match="old_log_probs"):
        advantages(data, "fk_unlikely")
    advantages(data, "fk_grpo")  # estimators that do not rank do not need them


def test_fk_unlikely_outside_compute_advantage_is_an_error():
    data = make_batch(seed=11)
    estimator = core_algos.get_adv_estimator_fn("fk_unlikely")
    with pytest.raises(RuntimeError, match="install_log_prob_hook"):
        estimator(data.batch["token_level_rewards"], data.batch["response_mask"], index=data.non_tensor_batch["uid"])
    # given the log-probs directly (as a later verl might pass them) it works
    adv, _ = estimator(
        data.batch["token_level_rewards"],
        data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        old_log_probs=data.batch["old_log_probs"],
    )
    assert torch.equal(adv, advantages(data, "fk_unlikely"))


def test_hook_fails_loudly_when_verl_stops_calling_the_registry(monkeypatch):
    """Simulates a verl whose compute_advantage routes the name elsewhere than the registry."""
    data = make_batch(seed=12)
    real_lookup = core_algos.get_adv_estimator_fn
    monkeypatch.setattr(core_algos, "get_adv_estimator_fn", lambda name: real_lookup("grpo_vectorized"))
    with pytest.raises(RuntimeError, match="without calling the registered estimator fk_unlikely"):
        advantages(data, "fk_unlikely")


def test_hook_refuses_a_changed_compute_advantage(monkeypatch):
    def compute_advantage(batch, estimator, config=None):  # another signature than verl 0.9.1's
        return batch

    monkeypatch.setattr(ray_trainer, "compute_advantage", compute_advantage)
    with pytest.raises(RuntimeError, match="no longer has the signature"):
        fk_verl.install_log_prob_hook()


def test_hook_rebinds_modules_that_imported_compute_advantage(monkeypatch):
    hooked = ray_trainer.compute_advantage
    assert getattr(hooked, "__fairkernels_log_prob_hook__", False)
    original = hooked.__wrapped__
    trainer_module = types.ModuleType("verl.some_trainer")
    trainer_module.compute_advantage = original  # as "from ...ray_trainer import compute_advantage"
    monkeypatch.setitem(sys.modules, "verl.some_trainer", trainer_module)
    monkeypatch.setattr(ray_trainer, "compute_advantage", original)
    wrapper = fk_verl.install_log_prob_hook()
    assert ray_trainer.compute_advantage is wrapper and trainer_module.compute_advantage is wrapper
    assert fk_verl.install_log_prob_hook() is wrapper  # idempotent


def test_the_environment_variable_registers_the_estimators_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.trainer.ppo import core_algos, ray_trainer\n"
        "names = {'fk_grpo', 'fk_rloo', 'fk_drgrpo', 'fk_unlikely', 'fk_passk'}\n"
        "assert names <= set(core_algos.ADV_ESTIMATOR_REGISTRY)\n"
        "assert ray_trainer.compute_advantage.__fairkernels_log_prob_hook__\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "fairkernels.integrations.verl"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---- options and bad input -------------------------------------------------------------------


def test_fk_passk_is_group_advantages_with_pass_k_through_compute_advantage():
    import fairkernels

    data = make_batch(seed=21)
    scores = data.batch["token_level_rewards"].sum(-1)
    mask = data.batch["response_mask"]
    ids = torch.from_numpy(fk_verl.uid_to_group_ids(data.non_tensor_batch["uid"], scores.shape[0]))
    for k in (8, 2):
        expected = fairkernels.group_advantages(scores, group_ids=ids, mask=mask, pass_k=k, singleton="raw", eps=1e-6)
        got = advantages(data, "fk_passk", pass_k=k) if k != 8 else advantages(data, "fk_passk")
        assert torch.equal(got, expected)
    assert max_diff(advantages(data, "fk_passk", pass_k=1), advantages(data, "fk_grpo", unbiased=False)) <= TOL


def test_options_override_the_defaults():
    data = make_batch(seed=13)
    eps = advantages(data, "fk_grpo", eps=0.5)
    assert max_diff(eps, advantages(data, "fk_grpo")) > 0.1
    assert fk_verl.estimator_options("fk_grpo", {"fairkernels": {"eps": 0.5}})["eps"] == 0.5
    assert fk_verl.estimator_options("fk_grpo", {"norm_adv_by_std_in_grpo": False})["scale"] == "none"
    assert fk_verl.estimator_options("fk_unlikely")["beta_rank"] == 0.25


def test_options_from_an_omegaconf_config():
    from omegaconf import OmegaConf

    config = OmegaConf.create({"adv_estimator": "fk_unlikely", "fairkernels": {"beta_rank": 0.1, "ties": "first"}})
    options = fk_verl.estimator_options("fk_unlikely", config)
    assert options["beta_rank"] == 0.1 and options["ties"] == "first"


def test_unknown_option_key_is_named():
    with pytest.raises(ValueError, match=r"algorithm\.fairkernels\.beta\b"):
        advantages(make_batch(seed=14), "fk_unlikely", beta=0.1)


def test_bad_option_value_is_named():
    with pytest.raises(ValueError, match=r"algorithm\.fairkernels: scale must be one of"):
        advantages(make_batch(seed=15), "fk_grpo", scale="grup")
    with pytest.raises(TypeError, match="beta_rank"):
        advantages(make_batch(seed=15), "fk_unlikely", beta_rank="high")


def test_nan_rewards_are_left_out_of_their_group():
    data = make_batch(seed=16, empty_rows=False)
    last = data.batch["response_mask"].sum(-1) - 1
    uids = data.non_tensor_batch["uid"]
    row = int(np.flatnonzero([(uids == u).sum() == 16 for u in uids])[0])  # a row of a group of 16
    scores = data.batch["token_level_rewards"].sum(-1)
    data.batch["token_level_rewards"][row, last[row]] = float("nan")
    ours = advantages(data, "fk_grpo")
    assert torch.equal(ours[row], torch.zeros_like(ours[row]))
    keep = np.flatnonzero(np.arange(len(scores)) != row)
    assert max_diff(ours[keep], advantages(copy_of(data).select_idxs(keep), "grpo")) <= TOL
    assert torch.isfinite(ours).all()


def test_uid_array_of_the_wrong_length_is_an_error():
    data = make_batch(seed=17)
    estimator = core_algos.get_adv_estimator_fn("fk_grpo")
    uids = data.non_tensor_batch["uid"][:-1]
    with pytest.raises(ValueError, match=r"index \(data.non_tensor_batch\['uid'\]\) must have one entry per response"):
        estimator(data.batch["token_level_rewards"], data.batch["response_mask"], index=uids)
    with pytest.raises(ValueError, match="need index"):
        estimator(data.batch["token_level_rewards"], data.batch["response_mask"])


def test_response_mask_of_another_shape_is_an_error():
    data = make_batch(seed=18)
    estimator = core_algos.get_adv_estimator_fn("fk_grpo")
    with pytest.raises(ValueError, match="response_mask has shape"):
        estimator(
            data.batch["token_level_rewards"], data.batch["response_mask"][:, :-1], index=data.non_tensor_batch["uid"]
        )


def test_inputs_are_not_modified():
    data = make_batch(seed=19)
    before = {k: v.clone() for k, v in data.batch.items()}
    uids = data.non_tensor_batch["uid"].copy()
    out = ray_trainer.compute_advantage(data, adv_estimator="fk_unlikely", config={})
    for key, value in before.items():
        assert torch.equal(out.batch[key].nan_to_num(), value.nan_to_num()), key
    assert (out.non_tensor_batch["uid"] == uids).all()


# ---- uid mapping -----------------------------------------------------------------------------


def test_uids_group_as_verl_loop_groups_them():
    uids = np.array(["b", "a", "01", "1", "b", "1"], dtype=object)  # "01" and "1" are different uids
    ids = fk_verl.uid_to_group_ids(uids, len(uids))
    assert ids.dtype == np.int64
    assert ids[0] == ids[4] and ids[3] == ids[5] and len(set(ids.tolist())) == 4
    assert np.array_equal(fk_verl.uid_to_group_ids(np.array([7, 3, 7]), 3), [7, 3, 7])
    assert np.array_equal(fk_verl.uid_to_group_ids(np.array(["x", "y", "x"]), 3), [0, 1, 0])


def test_uids_that_do_not_compare_are_an_error():
    with pytest.raises(TypeError, match="mutually comparable"):
        fk_verl.uid_to_group_ids(np.array(["a", None, 3], dtype=object), 3)


# ---- the example config ------------------------------------------------------------------------

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "verl")


def test_example_config_composes_with_verls_own_config():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=EXAMPLES, version_base=None):
        config = compose(config_name="fk_unlikely")
    assert config.algorithm.adv_estimator == "fk_unlikely"
    assert config.trainer.total_epochs is not None  # the rest came from verl's ppo_trainer.yaml
    data = make_batch(seed=20)
    out = ray_trainer.compute_advantage(
        copy_of(data), adv_estimator=config.algorithm.adv_estimator, config=config.algorithm
    )
    assert torch.equal(out.batch["advantages"], advantages(data, "fk_unlikely", beta_rank=0.25))
