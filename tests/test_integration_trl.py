"""fairkernels.integrations.trl against TRL's own GRPOTrainer: advantages equal TRL's at
beta_rank=0 on the same generated batch, the process slice under simulated process indices and
in two real processes (torchrun, gloo), a real two-step CPU training run with a tiny causal LM,
and the errors.  Skipped without trl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from integration_support import char_tokenizer, require, tiny_causal_lm

pytestmark = pytest.mark.integration

torch = require("torch", "trl")
trl = require("trl", "trl")
fk_trl = require("fairkernels.integrations.trl", "trl")
from datasets import Dataset  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

import fairkernels  # noqa: E402

GROUP = 4
PROMPTS = ["ab", "ba", "abc", "c"]


def contains_a(completions, **kwargs):
    """1 if the completion has an "a"; None (no reward) when it has a "z"."""
    return [None if "z" in c else float("a" in c) for c in completions]


def short_bonus(completions, **kwargs):
    return [None if "z" in c else 1.0 / (1 + len(c)) for c in completions]


def make_trainer(tmp_path, advantage_options=None, max_steps=2, **config):
    tokenizer = char_tokenizer()
    args = trl.GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=2 * GROUP,
        num_generations=GROUP,
        max_completion_length=6,
        max_steps=max_steps,
        learning_rate=5e-3,
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
        **config,
    )
    dataset = Dataset.from_dict({"prompt": PROMPTS * 4})
    return fk_trl.GRPOTrainer(
        tiny_causal_lm(tokenizer),
        reward_funcs=[contains_a, short_bonus],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        advantage_options=advantage_options,
    )


def group_inputs():
    return [{"prompt": p} for p in PROMPTS[:2] for _ in range(GROUP)]


def generate(trainer, method):
    torch.manual_seed(1234)
    trainer.model.train()
    return method(group_inputs())


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_equal_trl_at_beta_zero(tmp_path, scale):
    trainer = make_trainer(tmp_path, scale_rewards=scale, reward_weights=[2.0, 0.5])
    theirs = generate(trainer, lambda inputs: trl.GRPOTrainer._generate_and_score_completions(trainer, inputs))
    theirs_logged = list(trainer._logs["advantages"])
    ours = generate(trainer, trainer._generate_and_score_completions)
    assert torch.equal(ours["completion_ids"], theirs["completion_ids"])  # same samples, so comparable
    assert float((ours["advantages"] - theirs["advantages"]).abs().max()) <= 1e-6
    assert np.allclose(list(trainer._logs["advantages"])[-len(theirs_logged):], theirs_logged, atol=1e-6, rtol=0)
    assert float(ours["advantages"].abs().max()) > 0.1  # a real signal was compared
    assert torch.equal(ours["advantages"], trainer.fairkernels_batch.advantages)


def test_unscorable_rows_get_zero(tmp_path):
    trainer = make_trainer(tmp_path)
    rewards_per_func = torch.tensor([[1.0, 0.5], [float("nan"), float("nan")], [0.0, 0.2], [1.0, float("nan")]])
    batch = fk_trl.gathered_advantages(rewards_per_func, trainer.reward_weights, 4, trainer.advantage_options)
    assert torch.isnan(batch.rewards[1]) and batch.advantages[1] == 0.0
    valid = torch.tensor([1.5, 0.2, 1.0])
    expected = (valid - valid.mean()) / (valid.std() + 1e-4)
    assert torch.allclose(batch.advantages[[0, 2, 3]], expected, atol=1e-6, rtol=0)


def trl_formula(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """TRL 1.16.0's group formula (sum_then_normalize, scale_rewards="group"), with its nanstd."""
    mean = torch.nanmean(rewards.view(-1, group), dim=1).repeat_interleave(group)
    std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    return torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)


@pytest.mark.parametrize("n_processes", [2, 3])
def test_process_slices_with_simulated_processes(n_processes):
    """Each simulated process reduces its own (differently padded) log-probs, the per-sequence
    values are gathered process-major like the rewards, and each keeps its own rows."""
    rng = np.random.default_rng(n_processes)
    local_size = 2 * GROUP
    n = n_processes * local_size
    rewards_per_func = torch.from_numpy(rng.integers(0, 2, (n, 1)).astype(np.float32))
    weights = torch.ones(1)
    local_seq = []
    for process in range(n_processes):
        width = 3 + process  # each process pads its completions to its own length
        logps = torch.from_numpy(-rng.random((local_size, width)).astype(np.float32))
        mask = torch.from_numpy(rng.random((local_size, width)) < 0.8)
        local_seq.append(fk_trl.sequence_logps(logps, mask, "mean"))
    gathered_seq = torch.cat(local_seq)  # what accelerator.gather returns
    options = fk_trl.advantage_options_for({"beta_rank": 0.5}, "group")
    batch = fk_trl.gathered_advantages(rewards_per_func, weights, GROUP, options, gathered_seq)
    whole = fairkernels.group_advantages(
        rewards_per_func[:, 0].contiguous(), group_size=GROUP, seq_logp=gathered_seq, beta_rank=0.5, eps=1e-4
    )
    plain = fk_trl.gathered_advantages(rewards_per_func, weights, GROUP, fk_trl.advantage_options_for({}, "group"))
    for process in range(n_processes):
        rows = slice(process * local_size, (process + 1) * local_size)
        assert torch.equal(fk_trl.process_rows(batch.advantages, process, local_size), whole[rows])
        assert torch.allclose(
            fk_trl.process_rows(plain.advantages, process, local_size),
            trl_formula(rewards_per_func[:, 0], GROUP)[rows],
            atol=1e-6,
            rtol=0,
        )
    assert not torch.equal(batch.advantages, plain.advantages)  # the ranks mattered
    with pytest.raises(ValueError, match="outside the"):
        fk_trl.process_rows(batch.advantages, n_processes, local_size)


def test_sequence_logps_never_read_padding():
    logps = torch.tensor([[-1.0, -3.0, float("nan")], [float("-inf"), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert torch.equal(fk_trl.sequence_logps(logps, mask, "mean"), torch.tensor([-2.0, 0.0]))
    assert torch.equal(fk_trl.sequence_logps(logps, mask, "sum"), torch.tensor([-4.0, 0.0]))


def test_two_step_training_run_with_the_unlikeliness_reward(tmp_path):
    trainer = make_trainer(tmp_path, advantage_options={"beta_rank": 0.25}, max_steps=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(np.isfinite(losses))
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, trainer.model.parameters())]
    assert sum(changed) > len(changed) // 2
    batch = trainer.fairkernels_batch
    assert batch.seq_logp is not None and bool((batch.seq_logp < 0).all())
    expected = fairkernels.group_advantages(
        batch.rewards, group_size=GROUP, seq_logp=batch.seq_logp, beta_rank=0.25, eps=1e-4
    )
    assert torch.equal(batch.advantages, expected)
    logged = torch.tensor(list(trainer._logs["advantages"])[-len(expected):])
    assert torch.equal(logged, expected)  # what TRL logs is ours


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown advantage_options key 'beta'"):
        make_trainer(tmp_path, advantage_options={"beta": 0.1})
    with pytest.raises(ValueError, match="advantage_options: baseline must be one of"):
        make_trainer(tmp_path, advantage_options={"baseline": "median"})
    with pytest.raises(ValueError, match="sum_then_normalize"):
        make_trainer(tmp_path, multi_objective_aggregation="normalize_then_sum")


def test_log_probs_come_from_trl_where_it_computes_them(tmp_path):
    """With steps_per_generation=2 TRL computes old_per_token_logps: the ranks use them, and the
    extra forward pass used otherwise gives the same values."""
    trainer = make_trainer(tmp_path, advantage_options={"beta_rank": 0.25}, steps_per_generation=2)
    output = generate(trainer, trainer._generate_and_score_completions)
    assert output["old_per_token_logps"] is not None
    mask = output["completion_mask"]
    from_trl = fk_trl.sequence_logps(output["old_per_token_logps"], mask, "mean")
    assert torch.equal(trainer.fairkernels_batch.seq_logp, from_trl)
    recomputed = fk_trl.sequence_logps(trainer._policy_token_logps(output, "train"), mask, "mean")
    assert torch.allclose(recomputed, from_trl, atol=1e-5, rtol=0)


def test_two_real_processes(tmp_path):
    """torchrun, two CPU processes: TRL's gather and slice, a group split across processes."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trl_two_processes.py")
    path = os.pathsep.join(p for p in (os.path.dirname(script), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script]
    command.append(str(tmp_path))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as handle:
            report = json.load(handle)
        assert report["world"] == 2 and report["gathered_rows"] == 12
        assert report["same_samples"] and report["max_diff_to_trl"] <= 1e-6 and report["max_abs_advantage"] > 0.1
        assert report["ranked_rows_are_this_process"] and report["ranks_changed_something"]


def test_groups_of_one_get_zero_as_in_trl():
    """num_generations_eval=1: TRL's (r - mean) / (0 + 1e-4) is 0 for every row; so is ours."""
    rewards_per_func = torch.tensor([[0.3], [1.0], [float("nan")]])
    batch = fk_trl.gathered_advantages(rewards_per_func, torch.ones(1), 1, fk_trl.advantage_options_for({}, "group"))
    assert torch.equal(batch.advantages, torch.zeros(3))


def test_pass_k_through_the_gathered_advantages():
    rng = np.random.default_rng(4)
    rewards_per_func = torch.from_numpy(rng.integers(0, 2, (24, 2)).astype(np.float32))
    weights = torch.tensor([1.0, 0.5])
    options = fk_trl.advantage_options_for({"pass_k": 4}, "group")
    batch = fk_trl.gathered_advantages(rewards_per_func, weights, 8, options)
    rewards = (rewards_per_func * weights).sum(dim=1)
    expected = fairkernels.group_advantages(rewards, group_size=8, pass_k=4, eps=1e-4)
    assert torch.equal(batch.advantages, expected)
    assert float(batch.advantages.view(3, 8).sum(dim=1).abs().max()) < 1e-5  # pass@k sums to 0 per group
