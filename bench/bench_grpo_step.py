"""Share of one GRPO training step spent computing advantages: fairkernels vs a Python loop.

The loop is written in the style of verl's ``compute_grpo_outcome_advantage`` (a dict of
scores per uid, ``torch.mean`` / ``torch.std`` per group, ``(r - mean) / (std + 1e-6)``, times
the response mask) with the unlikeliness authors' rank code (``argsort(argsort(mean logp))``,
``score *= 1 - rank / G * beta``) and the group filter (keep groups whose rewards differ).

Run as a script (prints a markdown table)::

    python bench/bench_grpo_step.py [--repeats 200] [--steps 30]

or through pytest-benchmark: ``pytest bench/bench_grpo_step.py --benchmark-only``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

import fairkernels
from fairkernels.experiments.grpo.policy import ProofPolicy
from fairkernels.experiments.grpo.tasks import TaskConfig, generate_problems
from fairkernels.experiments.grpo.train import GRPOConfig, grpo_step

G = 32
PROBLEMS_PER_STEP = 16


def verl_style_advantages(rewards: torch.Tensor, index: list[int], token_logp: torch.Tensor,
                          mask: torch.Tensor, beta_rank: float, eps: float = 1e-6
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group Python loop (verl) + argsort ranks (authors) + group filter."""
    scores = rewards.clone()
    seq_logp = (token_logp * mask).sum(-1) / mask.sum(-1)
    id2score: dict[int, list[torch.Tensor]] = defaultdict(list)
    id2rows: dict[int, list[int]] = defaultdict(list)
    id2mean: dict[int, torch.Tensor] = {}
    id2std: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2rows[index[i]].append(i)
        if beta_rank:
            for rows in id2rows.values():
                # stable sorts so that ties are broken by row, as fairkernels' ties="first"
                rank = torch.argsort(torch.argsort(seq_logp[rows], stable=True), stable=True)
                scores[rows] = scores[rows] * (1 - rank / len(rows) * beta_rank)
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx] = torch.tensor(0.0)
                id2std[idx] = torch.tensor(1.0)
            else:
                id2mean[idx] = torch.mean(torch.tensor(id2score[idx]))
                id2std[idx] = torch.std(torch.tensor([id2score[idx]]))
        keep = torch.zeros(bsz, dtype=torch.bool)
        for rows in id2rows.values():
            r = rewards[rows]
            keep[rows] = bool((r != r[0]).any())
        for i in range(bsz):
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
        return scores.unsqueeze(-1) * mask, keep


def fairkernels_advantages(rewards: torch.Tensor, token_logp: torch.Tensor, mask: torch.Tensor,
                           beta_rank: float, ties: str = "average"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same through the public API (train.py's call; ties="first" = the authors' ranks)."""
    return fairkernels.group_advantages(rewards, group_size=G, token_logp=token_logp, mask=mask,
                                        likelihood="mean", beta_rank=beta_rank, ties=ties,
                                        return_signal=True)


def make_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A realistic batch: 16 x 32 proofs sampled from a policy, 0/1 rewards, log-probs."""
    torch.manual_seed(seed)
    policy = ProofPolicy(24, 48, 6)
    n = PROBLEMS_PER_STEP * G
    batch = policy.sample(torch.randint(1, 25, (n,)), torch.randint(1, 19, (n,)))
    rewards = (torch.rand(n) < 0.6).float()
    return rewards, batch.token_logp, batch.mask


# CPU time of this process (one thread), not wall time: the development machine is shared,
# and waiting for a core would otherwise be counted in whichever part happened to wait.
clock = time.process_time


def median_time(fn, repeats: int, inner: int = 10) -> float:
    """Median CPU seconds of one ``fn()`` call (medians of ``inner``-call batches)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        times.append((clock() - t0) / inner)
    return statistics.median(times)


def step_time(steps: int, beta_rank: float) -> float:
    """Median CPU seconds of one full GRPO step (sampling, verifier, advantages, PPO updates)."""
    task = TaskConfig()
    problems = generate_problems(task).train
    policy = ProofPolicy(task.max_start, task.max_delta, task.max_len)
    ref = copy.deepcopy(policy)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-4)
    cfg = GRPOConfig(beta_rank=beta_rank)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    totals = []
    for _ in range(steps):
        pick = rng.choice(len(problems), size=PROBLEMS_PER_STEP, replace=False)
        t0 = clock()
        grpo_step(policy, ref, opt, [problems[i] for i in pick], cfg, gen, rng)
        totals.append(clock() - t0)
    return statistics.median(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rewards, token_logp, mask = make_batch()
    index = [i // G for i in range(len(rewards))]
    print(f"fairkernels {fairkernels.__version__}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread, {dt.date.today()}")
    print(f"batch: {PROBLEMS_PER_STEP} problems x G={G}, proofs of <= 6 tokens; CPU time, "
          "medians\n")
    print("| beta_rank | step with fairkernels (ms) | adv fairkernels (ms) | share "
          "| adv verl-style loop (ms) | share (loop) |")
    print("|---|---|---|---|---|---|")
    for beta in (0.0, 0.25):
        fk_out = fairkernels_advantages(rewards, token_logp, mask, beta, ties="first")
        loop_out = verl_style_advantages(rewards, index, token_logp, mask, beta)
        # same numbers from both, else the timing comparison means nothing
        torch.testing.assert_close(fk_out[0].float(), loop_out[0].float(), atol=1e-4, rtol=1e-4)
        assert torch.equal(torch.as_tensor(fk_out[1]).bool(), loop_out[1])
        t_fk = median_time(lambda b=beta: fairkernels_advantages(rewards, token_logp, mask, b),
                           args.repeats)
        t_loop = median_time(lambda b=beta: verl_style_advantages(rewards, index, token_logp, mask, b),
                             max(5, args.repeats // 5), inner=2)
        t_step = step_time(args.steps, beta)
        rest = t_step - t_fk  # the step without its advantage computation
        print(f"| {beta} | {1e3 * t_step:.1f} | {1e3 * t_fk:.3f} | "
              f"{100 * t_fk / (rest + t_fk):.2f}% | {1e3 * t_loop:.2f} | "
              f"{100 * t_loop / (rest + t_loop):.1f}% |")


# pytest-benchmark entry points -------------------------------------------------------------

def test_bench_advantages_fairkernels(benchmark) -> None:
    rewards, token_logp, mask = make_batch()
    benchmark(fairkernels_advantages, rewards, token_logp, mask, 0.25)


def test_bench_advantages_verl_loop(benchmark) -> None:
    rewards, token_logp, mask = make_batch()
    index = [i // G for i in range(len(rewards))]
    benchmark(verl_style_advantages, rewards, index, token_logp, mask, 0.25)


if __name__ == "__main__":
    main()
