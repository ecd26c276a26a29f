"""Per-call overhead of small eager calls, for two installations of fairkernels in one run.

Each entry point is called on tiny inputs, where the kernel's own work is negligible and the
time is the Python call path (argument checks, views, allocation, dispatch).  The two
installations (e.g. the previous commit and this one) are timed in separate interpreters, in
alternation, several times each, so that both see the same machine load; times are the
process's CPU time (one thread), and the table gives the best (minimum) per-call time of each.

    python bench/overhead.py --path before=/path/to/old/python --path after=python

A path is put first on sys.path of its interpreter (a source tree with the compiled modules
copied next to the Python files, or a site-packages directory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# Runs inside each interpreter: prints {case: best microseconds per call}.
PROBE = r"""
import json, sys, time, timeit
import numpy as np
import torch
import fairkernels
from fairkernels.bandits import OFS
from fairkernels.torch import CausalRMLoss

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
rewards = (torch.rand(16, generator=g) < 0.5).float()
ids = torch.arange(16) // 4
token_logp, mask = torch.randn(16, 8, generator=g), torch.rand(16, 8, generator=g) < 0.8
out = torch.empty(16, 8)
np_rewards = rewards.numpy()
logits = torch.randn(16, generator=g, requires_grad=True)
labels = (torch.rand(16, generator=g) < 0.5).double().float()
observed = torch.rand(16, generator=g) < 0.7
propensity = torch.rand(16, generator=g) * 0.8 + 0.2
loss_fn = CausalRMLoss(estimator="ips")
policy = OFS(4, 11, 1, like=torch.zeros(0))
b_rewards, b_residuals = torch.rand(4, dtype=torch.float64), torch.rand(4, 1, dtype=torch.float64) - 0.5

def propensity_step():
    loss_fn(logits, labels, observed, propensity).backward()

def bandit_step():
    policy.update(policy.select(), b_rewards, b_residuals, 10.0)

cases = {
    "group_advantages torch [16], group_size": lambda: fairkernels.group_advantages(rewards, group_size=4),
    "group_advantages torch [16], group_ids": lambda: fairkernels.group_advantages(rewards, group_ids=ids),
    "group_advantages torch token [16, 8] + ranks, out=": lambda: fairkernels.group_advantages(
        rewards, group_size=4, token_logp=token_logp, mask=mask, beta_rank=0.25, out=out),
    "group_advantages numpy [16], group_size": lambda: fairkernels.group_advantages(np_rewards, group_size=4),
    "CausalRMLoss ips [16] forward + backward": propensity_step,
    "OFS torch B=4: select + update": bandit_step,
}
result = {}
for name, fn in cases.items():
    fn()
    number = 2000
    # CPU time of this process, not wall time: the figure does not count the time the machine
    # gives to other processes (the development VM is shared).
    times = timeit.repeat(fn, number=number, repeat=int(sys.argv[1]), timer=time.process_time)
    result[name] = min(times) / number * 1e6
print(json.dumps(result))
"""


def measure(path: str, repeat: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PROBE, str(repeat)], env=env, capture_output=True, text=True,
                          check=True, cwd="/")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", action="append", required=True, metavar="LABEL=PATH",
                        help="an installation to time (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per installation")
    parser.add_argument("--repeat", type=int, default=5, help="timeit repeats per round")
    args = parser.parse_args()
    paths = dict(item.split("=", 1) for item in args.path)
    best: dict[str, dict[str, float]] = {label: {} for label in paths}
    for _ in range(args.rounds):
        for label, path in paths.items():
            for case, value in measure(path, args.repeat).items():
                best[label][case] = min(value, best[label].get(case, float("inf")))
    labels = list(paths)
    print("| case | " + " | ".join(f"{label} (us per call)" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for case in best[labels[0]]:
        print(f"| {case} | " + " | ".join(f"{best[label][case]:.1f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
