"""Array interop: one view over numpy arrays, torch tensors and CuPy arrays.

The kernels receive raw addresses, so everything library-specific lives here: recognising an
array, reading its dtype/shape/strides/device/address, allocating outputs in the caller's
library and device, and finding the caller's current CUDA stream.  torch and CuPy are never
imported unless the caller's arrays come from them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _memory

# Codes of the compiled core's DType enum (cpp/common.h); keep in step.
DTYPE_CODES = {
    "bool": 0,
    "uint8": 1,
    "float16": 2,
    "bfloat16": 3,
    "float32": 4,
    "float64": 5,
    "int64": 6,
}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
CPU_FLOAT_DTYPES = ("float32", "float64")


def is_torch_tensor(x: Any) -> bool:
    """True for torch tensors; never imports torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def library_of(x: Any) -> str | None:
    """'numpy', 'torch' or 'cupy' for a supported array, else None."""
    if isinstance(x, np.ndarray):
        return "numpy"
    module = type(x).__module__
    if module.startswith("torch") and "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor):
        return "torch"
    if module.startswith("cupy") and "cupy" in sys.modules and isinstance(x, sys.modules["cupy"].ndarray):
        return "cupy"
    return None


_NUMPY_DTYPE_NAMES: dict = {}


def _numpy_dtype_name(dtype: Any) -> str:
    # dtype.name is slow (it formats a string each time); the set of dtypes seen is tiny.
    name = _NUMPY_DTYPE_NAMES.get(dtype)
    if name is None:
        name = _NUMPY_DTYPE_NAMES[dtype] = dtype.name
    return name


_TORCH_DTYPE_NAMES: dict = {}


def _torch_dtype_name(dtype: Any) -> str:
    name = _TORCH_DTYPE_NAMES.get(dtype)
    if name is None:
        name = _TORCH_DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


@dataclass(frozen=True)
class ArrayView:
    """What the dispatch layer needs to know about one array argument."""

    array: Any
    name: str
    library: str
    device: str  # "cpu" or "cuda"
    device_index: int  # -1 on the CPU
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    address: int

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"

    def describe_device(self) -> str:
        return f"{self.library} on {self.device}" + (f":{self.device_index}" if self.on_cuda else "")


def view(x: Any, name: str) -> ArrayView:
    """Reads an array's metadata without copying.  TypeError for anything else."""
    library = library_of(x)
    if library == "numpy":
        itemsize = x.dtype.itemsize
        return ArrayView(
            x, name, "numpy", "cpu", -1, _numpy_dtype_name(x.dtype), x.shape,
            tuple(s // itemsize for s in x.strides), x.ctypes.data,
        )
    if library == "torch":
        on_cuda = x.device.type == "cuda"
        if x.device.type not in ("cpu", "cuda"):
            raise TypeError(f"{name}: torch tensors on {x.device.type} are not supported (cpu or cuda only)")
        return ArrayView(
            x, name, "torch", "cuda" if on_cuda else "cpu", x.device.index if on_cuda else -1,
            _torch_dtype_name(x.dtype), tuple(x.shape), x.stride(), x.data_ptr(),
        )
    if library == "cupy":
        itemsize = x.dtype.itemsize
        return ArrayView(
            x, name, "cupy", "cuda", x.device.id, x.dtype.name, tuple(x.shape),
            tuple(s // itemsize for s in x.strides), x.data.ptr,
        )
    raise TypeError(f"{name} must be a numpy array, a torch tensor or a CuPy array, got {type(x).__name__}")


def same_place(reference: ArrayView, other: ArrayView) -> None:
    """Mixed libraries or devices are an error, never a silent copy."""
    if (other.library, other.device, other.device_index) != (
        reference.library,
        reference.device,
        reference.device_index,
    ):
        raise ValueError(
            f"{other.name} is a {other.describe_device()} array but {reference.name} is "
            f"{reference.describe_device()}: pass all arrays from one library and device"
        )


def inner_contiguous(v: ArrayView) -> ArrayView:
    """The kernels take [rows, cols] arrays with any row stride and a unit column stride;
    anything else is copied once into a contiguous array (documented by the callers)."""
    if len(v.shape) == 2 and (v.strides[1] == 1 or v.shape[1] <= 1) and (v.shape[0] <= 1 or v.strides[0] >= 0):
        return v
    return view(_contiguous(v), v.name)


def contiguous(v: ArrayView) -> ArrayView:
    expected = 1
    is_contiguous = True
    for size, stride in zip(reversed(v.shape), reversed(v.strides)):
        if size > 1 and stride != expected:
            is_contiguous = False
        expected *= size
    return v if is_contiguous else view(_contiguous(v), v.name)


def _contiguous(v: ArrayView) -> Any:
    if v.library == "numpy":
        return np.ascontiguousarray(v.array)
    if v.library == "torch":
        return v.array.contiguous()
    return sys.modules["cupy"].ascontiguousarray(v.array)


def astype(v: ArrayView, dtype: str) -> ArrayView:
    """A contiguous copy in another dtype (no copy when it already matches)."""
    if v.dtype == dtype:
        return contiguous(v)
    if v.library == "numpy":
        return view(np.ascontiguousarray(v.array, dtype=dtype), v.name)
    if v.library == "torch":
        torch = sys.modules["torch"]
        return view(v.array.to(getattr(torch, dtype)).contiguous(), v.name)
    cupy = sys.modules["cupy"]
    return view(cupy.ascontiguousarray(v.array.astype(dtype)), v.name)


@_memory.advises_fresh_outputs  # huge pages for large fresh CPU outputs (_memory.py)
def empty(like: ArrayView, shape: Sequence[int], dtype: str, name: str) -> ArrayView:
    """A new array in like's library and device."""
    shape = tuple(int(s) for s in shape)
    if like.library == "numpy":
        return view(np.empty(shape, dtype=dtype), name)
    if like.library == "torch":
        torch = sys.modules["torch"]
        return view(torch.empty(shape, dtype=getattr(torch, dtype), device=like.array.device), name)
    cupy = sys.modules["cupy"]
    with cupy.cuda.Device(like.device_index):
        return view(cupy.empty(shape, dtype=dtype), name)


def current_stream(v: ArrayView) -> int:
    """The caller's current CUDA stream on v's device (0 = the legacy default stream)."""
    if v.library == "torch":
        return sys.modules["torch"].cuda.current_stream(v.array.device).cuda_stream
    if v.library == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(v.device_index):
            return cupy.cuda.get_current_stream().ptr
    return 0
