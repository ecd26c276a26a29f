"""verl's whole ``compute_advantage`` call with ``fk_grpo`` against verl's ``grpo`` (its per-uid
Python loop) and ``grpo_vectorized``, as verl's driver process runs it (CPU).

N = 8,192 responses of prompts sampled 16 times, T = 4,096 response tokens, float32
``token_level_rewards`` (the score on the last response token), the int64 0/1 ``response_mask``
of verl's agent loop, uuid4 string uids repeated per prompt and the rows shuffled (verl's
``balance_batch`` reorders them).  Every call produces a fresh [N, T] result, as in training;
the floor is ``clone()`` of the [N, T] rewards (a fresh result of the same size).  The parts of
``fk_grpo``'s glue are timed too: the uid mapping and the int64 -> bool mask conversion.

    python -m pytest bench/bench_integrations.py --benchmark-json=bench.json
    python bench/report.py bench.json --family integrations --stat min

Skipped when verl is not installed (``pip install 'fairkernels[verl]'``).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer", reason="needs fairkernels[verl]")
fk_verl = pytest.importorskip("fairkernels.integrations.verl", reason="needs fairkernels[verl]")
from verl import DataProto  # noqa: E402

N, G, T = 8_192, 16, 4_096
ESTIMATORS = {"fk_grpo": "fairkernels", "grpo": "grpo_loop", "grpo_vectorized": "grpo_vectorized"}


@pytest.fixture(scope="module")
def batch() -> DataProto:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.int64)
    rewards = torch.zeros(N, T)
    rewards[torch.arange(N), lengths - 1] = (torch.rand(N, generator=g) < 0.4).float()
    uids = np.repeat(np.array([str(uuid.UUID(int=int(i))) for i in torch.randint(1 << 62, (N // G,), generator=g)],
                              dtype=object), G)
    order = torch.randperm(N, generator=g)
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards[order].contiguous(), "response_mask": mask[order].contiguous()},
        non_tensors={"uid": uids[order.numpy()]},
    )


def tag(benchmark, impl: str, variant: str = "shuffled uids") -> None:
    benchmark.group = "verl-compute_advantage"
    benchmark.extra_info.update(family="integrations", case="verl N=8192 G=16 T=4096", variant=variant, impl=impl)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_verl_compute_advantage(benchmark, batch, estimator):
    tag(benchmark, ESTIMATORS[estimator])
    config = {"norm_adv_by_std_in_grpo": True}
    result = benchmark(lambda: ray_trainer.compute_advantage(batch, adv_estimator=estimator, config=config))
    assert result.batch["advantages"].shape == (N, T)


def test_fresh_result_floor(benchmark, batch):
    tag(benchmark, "copy_floor", variant="any")
    rewards = batch.batch["token_level_rewards"]
    benchmark(rewards.clone)


def test_glue_uid_mapping(benchmark, batch):
    benchmark.group = "verl-glue"
    ids = benchmark(fk_verl.uid_to_group_ids, batch.non_tensor_batch["uid"], N)
    assert ids.max() == N // G - 1


def test_glue_mask_conversion(benchmark, batch):
    benchmark.group = "verl-glue"
    mask = batch.batch["response_mask"]
    benchmark(lambda: mask != 0)
