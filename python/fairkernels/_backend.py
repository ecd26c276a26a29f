"""Which compiled module runs a call, and the one launch helper every entry point uses."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Optional

from . import _core  # the CPU module is always built
from ._arrays import ArrayView, current_stream


class CudaUnavailableError(RuntimeError):
    """Raised when a call needs the CUDA kernels but they cannot run here."""


@functools.cache
def _cuda_module() -> tuple[Optional[ModuleType], str]:
    """The CUDA module and, when it is missing, why."""
    try:
        from . import _cuda
    except ImportError as error:
        return None, f"fairkernels was built without its CUDA module ({error})"
    count, message = _cuda.device_count()
    if count <= 0:
        return None, f"the CUDA module is built but no CUDA device is usable ({message})"
    return _cuda, ""


def cuda_compiled() -> bool:
    """True when this installation carries the CUDA module (whether or not a GPU is present)."""
    try:
        from . import _cuda  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    """True when the CUDA kernels can run: the module is built and a device is present."""
    return _cuda_module()[0] is not None


def kernels_for(v: ArrayView) -> ModuleType:
    """The compiled module for arrays living where v lives."""
    if not v.on_cuda:
        return _core
    module, reason = _cuda_module()
    if module is None:
        raise CudaUnavailableError(f"{v.name} is on a CUDA device, but {reason}")
    return module


def launch(kernel: str, place: ArrayView, *arguments: Any) -> None:
    """Runs ``kernel`` of the module for arrays living where ``place`` lives.  CUDA kernels
    also get the device and the caller's current stream on it (no synchronisation)."""
    function = getattr(kernels_for(place), kernel)
    if place.on_cuda:
        function(*arguments, place.device_index, current_stream(place))
    else:
        function(*arguments)


def build_info() -> dict[str, Any]:
    from . import __version__

    module, reason = _cuda_module()
    return {
        "version": __version__,
        "cpu_threads": _core.openmp_threads(),
        "cuda_module": cuda_compiled(),
        "cuda_available": module is not None,
        "cuda_note": reason or "ok",
    }
