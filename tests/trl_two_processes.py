"""Run by test_integration_trl.py under torchrun with two CPU processes (gloo): the trainer's
own gather and process slice, with groups that straddle the two processes.

Each process writes rank<k>.json into the directory given as the only argument."""

from __future__ import annotations

import json
import os
import sys

import torch
import trl
from datasets import Dataset

import fairkernels
from fairkernels.integrations.trl import GRPOTrainer
from integration_support import char_tokenizer, tiny_causal_lm

GROUP = 4
LOCAL_ROWS = 6  # not a multiple of GROUP: group 1 has rows on both processes
PROMPTS = ["ab"] * GROUP + ["ba"] * GROUP + ["c"] * GROUP  # the gathered layout, process-major


def reward(completions, **kwargs):
    return [float("a" in c) + 0.1 * len(c) for c in completions]


def generate(trainer, method, inputs, seed):
    torch.manual_seed(seed)  # the same samples for TRL's method and ours
    return method(inputs)


def main(out_dir: str) -> None:
    tokenizer = char_tokenizer()
    args = trl.GRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        per_device_train_batch_size=LOCAL_ROWS, num_generations=GROUP, max_completion_length=6, seed=0,
    )
    trainer = GRPOTrainer(
        tiny_causal_lm(tokenizer), reward_funcs=reward, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": ["ab", "ba", "c"] * 4}),
    )
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    inputs = [{"prompt": p} for p in PROMPTS[rank * LOCAL_ROWS : (rank + 1) * LOCAL_ROWS]]
    trainer.model.train()
    theirs = generate(trainer, lambda x: trl.GRPOTrainer._generate_and_score_completions(trainer, x), inputs, rank)
    ours = generate(trainer, trainer._generate_and_score_completions, inputs, rank)
    result = {
        "rank": rank,
        "world": world,
        "same_samples": bool(torch.equal(ours["completion_ids"], theirs["completion_ids"])),
        "max_diff_to_trl": float((ours["advantages"] - theirs["advantages"]).abs().max()),
        "max_abs_advantage": float(ours["advantages"].abs().max()),
    }
    trainer.advantage_options = {**trainer.advantage_options, "beta_rank": 0.5}
    ours = generate(trainer, trainer._generate_and_score_completions, inputs, rank)
    batch = trainer.fairkernels_batch
    whole = fairkernels.group_advantages(batch.rewards, group_size=GROUP, seq_logp=batch.seq_logp, beta_rank=0.5,
                                         eps=1e-4)
    rows = slice(rank * LOCAL_ROWS, (rank + 1) * LOCAL_ROWS)
    result.update(
        gathered_rows=int(batch.rewards.numel()),
        ranked_rows_are_this_process=bool(torch.equal(ours["advantages"], whole[rows])),
        ranks_changed_something=not bool(torch.equal(whole, fairkernels.group_advantages(
            batch.rewards, group_size=GROUP, eps=1e-4))),
    )
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1])
