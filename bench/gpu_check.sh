#!/usr/bin/env bash
# One prepared run for a GPU machine (no network needed), under 8 minutes on one H100:
#   build with CUDA for this GPU, run the CUDA-marked tests, the CUDA benchmarks, and
#   compute-sanitizer (memcheck, racecheck) on a subset of the CUDA tests.
# Everything lands in one report file: $OUT/gpu_report.txt (OUT defaults to ./gpu-check).
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
REPORT="$OUT/gpu_report.txt"
PY=${PYTHON:-python}
section() { printf '\n==== %s (t=%ss)\n' "$1" "$SECONDS"; }

{
  section "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
  nvcc --version | tail -2
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1
  ARCH=$("$PY" -c "import torch; p=torch.cuda.get_device_properties(0); print(f'{p.major}{p.minor}-real')")

  section "build (CUDAARCHS=$ARCH)"
  CUDAARCHS=$ARCH CMAKE_BUILD_PARALLEL_LEVEL=16 timeout 300 "$PY" -m pip install -q --no-build-isolation --no-deps \
    -Cbuild-dir=build/gpu-check . && echo "build ok"
  (cd "$OUT" && "$PY" -c "import fairkernels, json; print(json.dumps(fairkernels.build_info()))")

  section "CUDA tests"
  (cd "$OUT" && timeout 240 "$PY" -m pytest ../tests -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
     -o addopts="" -rs 2>&1 | tail -40)

  section "CUDA benchmarks"
  (cd "$OUT" && timeout 180 "$PY" -m pytest ../bench -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
     --benchmark-json=gpu_bench.json --benchmark-max-time=0.3 --benchmark-columns=min,median,max 2>&1 | tail -60)
  for family in advantage-cuda bandits-cuda propensity-cuda; do
    "$PY" bench/report.py "$OUT/gpu_bench.json" --family "$family" 2>/dev/null
  done

  section "compute-sanitizer memcheck"
  (cd "$OUT" && timeout 150 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
     "$PY" -m pytest ../tests/test_advantage.py -m cuda -q -p no:cacheprovider -o addopts="" \
     -k "large_ragged or half or (cuda_matches_cpu and float32 and average and zero and mean)" 2>&1 | tail -25)
  echo "memcheck exit: $?"

  section "compute-sanitizer racecheck"
  (cd "$OUT" && timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 \
     "$PY" -m pytest ../tests/test_advantage.py -m cuda -q -p no:cacheprovider -o addopts="" \
     -k "large_ragged or (cuda_matches_cpu and float32 and batch and average and zero and mean)" 2>&1 | tail -15)
  echo "racecheck exit: $?"

  section "done"
} 2>&1 | tee "$REPORT"
