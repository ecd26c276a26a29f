"""Tests of the GRPO experiment: verifier, pass@k, policy log-probs, GRPO step, end to end."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fairkernels
from fairkernels.experiments.grpo import cli
from fairkernels.experiments.grpo.passk import mean_pass_at_k, pass_at_k
from fairkernels.experiments.grpo.policy import ProofPolicy
from fairkernels.experiments.grpo.run import EVAL_SETS, ExperimentConfig, evaluate, run_experiment
from fairkernels.experiments.grpo.tasks import (
    OPS,
    STOP,
    Problem,
    TaskConfig,
    apply_op,
    batch_verify,
    canonical_additive,
    classify,
    generate_problems,
    valid_proofs,
    verify,
)
from fairkernels.experiments.grpo.train import ARMS, FitConfig, GRPOConfig, fit_base, pad, ppo_loss

torch.set_num_threads(1)
L = 6
ops_st = st.lists(st.integers(0, len(OPS) - 1), min_size=1, max_size=L)


def run_ops(start: int, ops: list[int]) -> int:
    value = start
    for op in ops:
        value = apply_op(value, op)
    return value


# ----------------------------------------------------------------------------- verifier

@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 30), ops=ops_st)
def test_verifier_accepts_every_valid_proof(start: int, ops: list[int]) -> None:
    problem = Problem(start, run_ops(start, ops))
    assert verify(problem, ops, L)
    row = np.array([pad(tuple(ops), L)])
    assert batch_verify(np.array([start]), np.array([problem.target]), row).tolist() == [True]


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 30), ops=ops_st, offset=st.integers(-20, 20).filter(bool))
def test_verifier_rejects_wrong_target(start: int, ops: list[int], offset: int) -> None:
    problem = Problem(start, run_ops(start, ops) + offset)
    assert not verify(problem, ops, L)
    row = np.array([pad(tuple(ops), L)])
    assert batch_verify(np.array([start]), np.array([problem.target]), row).tolist() == [False]


@settings(max_examples=100, deadline=None)
@given(start=st.integers(1, 30), ops=st.lists(st.integers(0, 3), min_size=L + 1, max_size=L + 4))
def test_verifier_rejects_too_long_proofs(start: int, ops: list[int]) -> None:
    assert not verify(Problem(start, run_ops(start, ops)), ops, L)


@settings(max_examples=100, deadline=None)
@given(start=st.integers(1, 30), ops=ops_st, bad=st.sampled_from([-1, STOP, 7, 2.0]),
       pos=st.integers(0, L - 1))
def test_verifier_rejects_unknown_tokens(start: int, ops: list[int], bad, pos: int) -> None:
    target = run_ops(start, ops)
    broken = list(ops)
    broken[min(pos, len(broken) - 1)] = bad
    assert not verify(Problem(start, target), broken, L)


def test_verifier_rejects_empty_proof_and_checks_arguments() -> None:
    assert not verify(Problem(3, 3), [], L)
    assert batch_verify(np.array([3]), np.array([3]), np.full((1, L), STOP)).tolist() == [False]
    with pytest.raises(TypeError, match="problem"):
        verify((1, 2), [0], L)
    with pytest.raises(ValueError, match="max_len"):
        verify(Problem(1, 2), [0], 0)


def test_task_pools_are_disjoint_and_categories_hold() -> None:
    cfg = TaskConfig(n_train_hard=10)
    sets = generate_problems(cfg)
    fit, train, held = set(sets.fit), set(sets.train), set(sets.heldout)
    assert not (fit & train) and not (fit & held) and not (train & held)
    hard = sets.heldout_hard()
    assert len(hard) == cfg.n_heldout_hard >= 60
    for p in hard[:20]:  # only the rare style solves them
        proofs = valid_proofs(p, L)
        assert len(proofs) > 0 and np.all(np.any(proofs == 3, axis=1))
        assert classify(p, L) == "hard" and canonical_additive(p.delta, L) is None
    for p in [q for q in train if sets.category[q] == "medium"][:20]:  # both styles solve them
        styles = np.any(valid_proofs(p, L) == 3, axis=1)
        assert styles.any() and (~styles).any()
    assert sum(sets.category[p] == "hard" for p in train) == 10


# ----------------------------------------------------------------------------- pass@k

@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in range(1, 9) for c in range(n + 1)
                                   for k in range(1, n + 1)])
def test_pass_at_k_matches_closed_form(n: int, c: int, k: int) -> None:
    closed = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_is_mean_over_subsets() -> None:
    outcomes = [1, 0, 0, 1, 0, 0, 0]  # the estimator averages over all k-subsets
    for k in range(1, len(outcomes) + 1):
        subsets = list(itertools.combinations(outcomes, k))
        brute = np.mean([max(s) for s in subsets])
        assert pass_at_k(len(outcomes), sum(outcomes), k) == pytest.approx(brute)
    assert mean_pass_at_k(4, [0, 4], [1, 2]) == {1: 0.5, 2: 0.5}


def test_pass_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c"):
        pass_at_k(4, 5, 1)
    with pytest.raises(TypeError, match="n"):
        pass_at_k(4.0, 1, 1)


# ----------------------------------------------------------------------------- policy

def test_sampled_logp_equals_scored_logp() -> None:
    torch.manual_seed(0)
    policy = ProofPolicy(24, 48, L, hidden=32)
    starts = torch.randint(1, 25, (300,))
    deltas = torch.randint(1, 49, (300,))
    batch = policy.sample(starts, deltas, generator=torch.Generator().manual_seed(1))
    logp, mask = policy.score(starts, deltas, batch.tokens)
    assert torch.equal(mask, batch.mask)
    torch.testing.assert_close(logp, batch.token_logp, atol=1e-5, rtol=1e-5)
    # tokens after the first STOP are STOP and carry no log-prob
    assert torch.all(batch.tokens[batch.mask == 0] == STOP)
    assert torch.all(batch.token_logp[batch.mask == 0] == 0)
    # sequence log-probs are proper: per-step distributions sum to one over the 5 tokens
    assert torch.all(batch.token_logp <= 0)


def test_policy_rejects_out_of_range_inputs() -> None:
    policy = ProofPolicy(24, 48, L, hidden=16)
    with pytest.raises(ValueError, match="deltas"):
        policy.sample(torch.tensor([1]), torch.tensor([49]))
    with pytest.raises(ValueError, match="tokens"):
        policy.score(torch.tensor([1]), torch.tensor([2]), torch.zeros(1, L + 1, dtype=torch.long))


# ----------------------------------------------------------------------------- GRPO step

def test_grpo_update_moves_policy_towards_positive_advantages() -> None:
    torch.manual_seed(0)
    policy = ProofPolicy(24, 48, L, hidden=32)
    ref = ProofPolicy(24, 48, L, hidden=32)
    ref.load_state_dict(policy.state_dict())
    G = 32
    problems = [Problem(s, s + d) for s, d in [(1, 3), (5, 4), (2, 6), (7, 2)]]
    starts = torch.tensor([p.start for p in problems]).repeat_interleave(G)
    deltas = torch.tensor([p.delta for p in problems]).repeat_interleave(G)
    batch = policy.sample(starts, deltas, generator=torch.Generator().manual_seed(3))
    ok = batch_verify(starts.numpy(), (starts + deltas).numpy(), batch.tokens.numpy())
    rewards = torch.as_tensor(ok, dtype=torch.float32)
    adv_tok = fairkernels.group_advantages(rewards, group_size=G, token_logp=batch.token_logp,
                                           mask=batch.mask, beta_rank=0.25)
    adv = adv_tok.sum(1) / batch.mask.sum(1)
    pos, neg = adv > 0, adv < 0
    assert pos.any() and neg.any()
    with torch.no_grad():
        ref_logp, _ = ref.score(starts, deltas, batch.tokens)
    cfg = GRPOConfig()
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    loss = ppo_loss(policy, starts, deltas, batch.tokens, batch.token_logp, ref_logp,
                    adv_tok.float(), batch.mask, cfg)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        new_logp, _ = policy.score(starts, deltas, batch.tokens)
    seq_old = batch.token_logp.sum(1)
    seq_new = new_logp.sum(1)
    assert (seq_new - seq_old)[pos].mean() > 0
    assert (seq_new - seq_old)[neg].mean() < 0


# ----------------------------------------------------------------------------- end to end

def tiny_config() -> ExperimentConfig:
    return ExperimentConfig(
        task=TaskConfig(n_heldout_hard=6, n_heldout_medium=4, n_train=8),
        fit=FitConfig(n_per_medium=4, n_per_hard=1, epochs=1, hidden=16),
        grpo=GRPOConfig(steps=2, problems_per_step=4),
        rl_seeds=(0, 1), base_seeds=(0,), eval_samples=64, ks=(1, 4, 16, 64), workers=1)


def test_end_to_end_every_arm_writes_files(tmp_path) -> None:
    cfg = tiny_config()
    result = run_experiment(cfg, out_dir=tmp_path / "out", quiet=True)
    paths = result["paths"]
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    doc = json.loads(paths["json"].read_text())
    assert doc["fairkernels_version"] == fairkernels.__version__
    assert doc["config"]["grpo"]["group_size"] == 32
    assert {r["arm"] for r in doc["runs"]} == set(ARMS)
    rows = paths["runs_csv"].read_text().strip().splitlines()
    n_runs = len(cfg.base_seeds) + sum(spec is not None for spec in ARMS.values()) * len(cfg.rl_seeds)
    assert len(rows) == 1 + n_runs * len(EVAL_SETS)
    for r in doc["runs"]:
        for s in EVAL_SETS:
            passes = [r["metrics"][s][f"pass@{k}"] for k in cfg.ks]
            assert all(0 <= a <= b <= 1 for a, b in zip(passes, passes[1:]))
        if r["arm"] != "base":
            assert r["train_log"]["t_step_ms"] > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_counts_match_verifier() -> None:
    task = TaskConfig()
    problems = [Problem(2, 8), Problem(10, 13)]
    policy = fit_base(generate_problems(replace(task)), task,
                      FitConfig(n_per_medium=2, n_per_hard=1, epochs=1, hidden=16), seed=0)
    ev = evaluate(policy, problems, n_samples=64, seed=5, group=32)
    gen = torch.Generator().manual_seed(5)
    starts = torch.tensor([2, 10]).repeat_interleave(64)
    deltas = torch.tensor([6, 3]).repeat_interleave(64)
    tokens = policy.sample(starts, deltas, generator=gen).tokens.numpy()
    ok = batch_verify(starts.numpy(), (starts + deltas).numpy(), tokens)
    assert ev["correct"].tolist() == ok.reshape(2, 64).sum(1).tolist()


def test_cli_registers_subcommand_and_validates() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    args = parser.parse_args(["grpo", "--quick", "--rl-seeds", "3", "--steps", "7",
                              "--arms", "base", "unlikeliness"])
    assert args.func is cli.handle
    cfg = cli.config_from_args(args)
    assert cfg.rl_seeds == (0, 1, 2) and cfg.grpo.steps == 7
    assert cfg.arms == ("base", "unlikeliness")
    assert cfg.arm_grpo("unlikeliness").beta_rank == 0.25
    assert cfg.arm_grpo("grpo_2epochs").ppo_epochs == 2
    assert cfg.arm_grpo("passk").pass_k == 8 and cfg.arm_grpo("grpo").pass_k is None
    plain = cli.config_from_args(parser.parse_args(["grpo", "--variant", "plain"]))
    assert plain.task.rare_style == "any_doubling" and plain.fit.rare_continuation_weight == 1.0
    assert plain.eval_samples == 1024 and len(plain.rl_seeds) == 5 and len(plain.base_seeds) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["grpo", "--workers", "0"])
    with pytest.raises(ValueError, match="arms"):
        ExperimentConfig(arms=("nope",))
    with pytest.raises(ValueError, match="eval_samples"):
        ExperimentConfig(eval_samples=100)
