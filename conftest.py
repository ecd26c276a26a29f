"""pytest configuration shared by tests/ and bench/: the `cuda` marker skips where no CUDA
device is usable (the CUDA tests compare the CUDA kernels against the CPU ones)."""

import pytest

import fairkernels


def pytest_collection_modifyitems(config, items):
    if fairkernels.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: " + fairkernels.build_info()["cuda_note"])
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
