"""The existing estimators' fused forward + backward (numpy, N = 4,194,304, float32, noise
correction on) for two installations of fairkernels, timed in separate interpreters in
alternation so that both see the same machine load; one thread (OMP_NUM_THREADS=1), medians.
Each estimator runs in its own interpreter: in one process the order of the calls changes the
times (the allocator's history decides whether the fresh gradient buffers fault in their pages).

    python bench/propensity_two_installs.py --path before=/path/to/site --path after=python --rounds 3

A path is put first on sys.path of its interpreter (a site-packages or --target directory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = r"""
import json, statistics, time
import numpy as np
from fairkernels import propensity_loss
n = 4_194_304
rng = np.random.default_rng(0)
f = (rng.normal(size=n) * 3).astype(np.float32)
h = (rng.normal(size=n) * 2).astype(np.float32)
y = (rng.random(n) < 0.4).astype(np.float32)
o = rng.random(n) < 0.2
p = (rng.random(n) * 0.95 + 0.05).astype(np.float32)
out = {}
for est in [ESTIMATOR]:
    imputed = h if est == "dr" else None
    times = []
    for _ in range(15):
        start = time.perf_counter()
        propensity_loss(f, y, o, p, imputed, estimator=est, rho10=0.1, rho01=0.2, return_grad=True)
        times.append(time.perf_counter() - start)
    out[est] = statistics.median(times) * 1e3
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", action="append", required=True, help="NAME=PATH, twice or more")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = dict(item.split("=", 1) for item in args.path)
    results: dict = {name: [] for name in paths}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    estimators = ["naive", "ips", "snips", "dr"]
    for _ in range(args.rounds):
        for name, path in paths.items():
            times = {}
            for estimator in estimators:
                code = f"import sys; sys.path.insert(0, {os.path.abspath(path)!r})\n" + PROBE.replace(
                    "ESTIMATOR", repr(estimator))
                run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True)
                times.update(json.loads(run.stdout))
            results[name].append(times)
    print("median over rounds of the per-round medians (ms), one thread")
    print(f"{'install':10s} " + " ".join(f"{e:>8s}" for e in estimators))
    for name, rounds in results.items():
        print(f"{name:10s} " + " ".join(f"{statistics.median(r[e] for r in rounds):8.2f}" for e in estimators))


if __name__ == "__main__":
    main()
