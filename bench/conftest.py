"""Benchmarks run with pytest-benchmark:  pytest bench/ --benchmark-json=out.json
In CI they run once each with --benchmark-disable (a smoke test of the benchmark code).
Benchmarks marked `cuda` are skipped where no CUDA device is usable."""

import sys
from pathlib import Path

import pytest

import fairkernels

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if fairkernels.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: " + fairkernels.build_info()["cuda_note"])
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
