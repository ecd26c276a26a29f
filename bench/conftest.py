"""Benchmarks run with pytest-benchmark:  pytest bench/ --benchmark-json=out.json
In CI they run once each with --benchmark-disable (a smoke test of the benchmark code).
The `cuda` skip logic lives in the top-level conftest.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
