"""The one input layer of every kernel call: numpy arrays, torch tensors and CuPy arrays.

The kernels receive raw addresses and trust the layout they are given, so every array argument
of every public entry point passes through this module, which decides exactly one of:

* pass it as it is (right library and device, dtype, shape and layout);
* copy it once into the layout and dtype the kernel needs (inputs: any element strides,
  including negative and zero ones, columns and transposes; non-native byte order; unaligned
  data; an accepted dtype of another width; a torch negation view);
* raise a ``TypeError`` (not an array, a library, dtype or tensor kind we do not take) or a
  ``ValueError`` (wrong shape, another library or device than the other arguments, an output
  that is read-only, requires grad or whose elements overlap each other).

Outputs (``out=``) are written in place when the kernel can write them directly; an output the
kernel cannot write directly (a column, another byte order, memory shared with an input) gets
the result through one fresh buffer and one copy, so the caller's array holds the result either
way.  Python lists and scalars are never converted: array arguments must be arrays (configuration
arguments such as a bandit grid are documented as sequences by their callers).

torch and CuPy are never imported unless the caller's arrays come from them.
"""

from __future__ import annotations

import sys
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core, _memory

#: dtype name -> the compiled core's DType value (the enum is bound by the core itself).
DTYPES = dict(_core.DType.__members__)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
CPU_FLOAT_DTYPES = ("float32", "float64")
INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

Shape = Tuple[Optional[int], ...]  # None: any size in that dimension
NO_CONVERSION: Mapping[str, str] = MappingProxyType({})


def is_torch_tensor(x: Any) -> bool:
    """True for torch tensors; never imports torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def library_of(x: Any) -> Optional[str]:
    """'numpy', 'torch' or 'cupy' for a supported array, else None."""
    if isinstance(x, np.ndarray):
        return "numpy"
    module = type(x).__module__
    if module.startswith("torch") and "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor):
        return "torch"
    if module.startswith("cupy") and "cupy" in sys.modules and isinstance(x, sys.modules["cupy"].ndarray):
        return "cupy"
    return None


def kind_of(dtype: str) -> str:
    """'float', 'int' or 'bool' (or 'other') for a dtype name."""
    if dtype in FLOAT_DTYPES:
        return "float"
    if dtype in INTEGER_DTYPES:
        return "int"
    return "bool" if dtype == "bool" else "other"


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype: Any) -> str:
    # Formatting a dtype's name is slow and the set of dtypes seen is tiny: cache by dtype.
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        text = str(dtype)
        name = _DTYPE_NAMES[dtype] = text[6:] if text.startswith("torch.") else dtype.name
    return name


class ArrayView:
    """What the call path needs to know about one array argument (no copy is made)."""

    __slots__ = ("array", "name", "library", "device", "device_index", "dtype", "shape", "strides",
                 "_byte_strides", "itemsize", "address", "native", "writable", "resolved")

    def __init__(self, array: Any, name: str, library: str, device: str, device_index: int, dtype: str,
                 shape: tuple, strides: Optional[tuple], itemsize: int, address: int, native: bool = True,
                 writable: bool = True, resolved: bool = True, byte_strides: Optional[tuple] = None) -> None:
        self.array = array
        self.name = name
        self.library = library
        self.device = device  # "cpu" or "cuda"
        self.device_index = device_index  # -1 on the CPU
        self.dtype = dtype
        self.shape = shape
        # Element strides, or None when a stride is not a whole number of elements (a field of
        # a structured array): the kernels cannot address such an array.
        self.strides = strides
        self._byte_strides = byte_strides
        self.itemsize = itemsize
        self.address = address
        self.native = native  # native byte order
        self.writable = writable
        self.resolved = resolved  # False for a torch negation / conjugation view (lazy sign)

    @property
    def byte_strides(self) -> tuple:
        if self._byte_strides is None:
            self._byte_strides = tuple(s * self.itemsize for s in self.strides or ())
        return self._byte_strides

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def aligned(self) -> bool:
        return self.address % self.itemsize == 0

    def describe(self) -> str:
        where = f"{self.device}:{self.device_index}" if self.on_cuda else "cpu"
        kind = {"numpy": "a numpy array", "torch": "a torch tensor", "cupy": "a CuPy array"}[self.library]
        return f"{kind} on {where}"

    def span(self) -> tuple[int, int]:
        """[first byte, last byte + 1) of the memory the array's elements occupy."""
        low = high = self.address
        strides = self.strides if self.strides is not None else self.byte_strides
        unit = self.itemsize if self.strides is not None else 1
        for size, stride in zip(self.shape, strides):
            if size == 0:
                return self.address, self.address
            if stride > 0:
                high += (size - 1) * stride * unit
            else:
                low += (size - 1) * stride * unit
        return low, high + self.itemsize


def _element_strides(byte_strides: tuple, itemsize: int) -> Optional[tuple]:
    """Strides in elements, or None when one is not a whole number of elements."""
    if len(byte_strides) == 1:  # the common cases first: no generator
        (b0,) = byte_strides
        return (b0 // itemsize,) if b0 % itemsize == 0 else None
    if len(byte_strides) == 2:
        b0, b1 = byte_strides
        return (b0 // itemsize, b1 // itemsize) if b0 % itemsize == 0 and b1 % itemsize == 0 else None
    if any(b % itemsize for b in byte_strides):
        return None
    return tuple(b // itemsize for b in byte_strides)


def view(x: Any, name: str) -> ArrayView:
    """Reads an array's metadata without copying.  TypeError for anything else."""
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(f"{name} is a numpy masked array: its mask would be ignored; pass "
                            f"{name}.filled(value) or a plain array")
        dtype = x.dtype
        itemsize = dtype.itemsize
        byte_strides = x.strides
        return ArrayView(x, name, "numpy", "cpu", -1, _dtype_name(dtype), x.shape,
                         _element_strides(byte_strides, itemsize), itemsize, x.ctypes.data, dtype.isnative,
                         x.flags.writeable, True, byte_strides)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return _torch_view(x, name, torch)
    if library_of(x) == "cupy":
        itemsize = x.dtype.itemsize
        return ArrayView(x, name, "cupy", "cuda", x.device.id, _dtype_name(x.dtype), tuple(x.shape),
                         _element_strides(x.strides, itemsize), itemsize, x.data.ptr, byte_strides=x.strides)
    kind = type(x).__name__
    hint = " (lists, tuples and scalars are not converted: pass numpy.asarray(...))" if isinstance(
        x, (list, tuple, int, float, bool, complex)) else ""
    raise TypeError(f"{name} must be a numpy array, a torch tensor or a CuPy array, got {kind}{hint}")


def _torch_view(x: Any, name: str, torch: Any) -> ArrayView:
    if x.layout is not torch.strided:
        raise TypeError(f"{name} is a {x.layout} torch tensor: pass a dense (strided) tensor, e.g. {name}.to_dense()")
    if x.is_cuda:
        device, index = "cuda", x.device.index
    elif x.is_cpu:
        device, index = "cpu", -1
    else:
        raise TypeError(f"{name} is a torch tensor on {x.device.type}: fairkernels runs on cpu and cuda tensors only")
    resolved = not (x.is_neg() or x.is_conj())
    return ArrayView(x, name, "torch", device, index, _dtype_name(x.dtype), x.shape, x.stride(), x.element_size(),
                     x.data_ptr(), True, not x.requires_grad, resolved)


# ------------------------------------------------------------------------------------------
# Layouts the kernels take


def is_contiguous(v: ArrayView) -> bool:
    """C order in elements (strides of dimensions of size <= 1 do not matter)."""
    strides = v.strides
    if strides is None:
        return False
    if len(strides) == 1:  # the common case, without the loop
        return strides[0] == 1 or v.shape[0] <= 1
    expected = 1
    for size, stride in zip(reversed(v.shape), reversed(strides)):
        if size > 1 and stride != expected:
            return False
        expected *= size
    return True


def has_rows_layout(v: ArrayView, writable: bool = False) -> bool:
    """[rows, cols] with a unit column stride and any row stride >= 0 (inputs may repeat a row:
    stride 0; outputs need rows that do not overlap: stride >= cols)."""
    if len(v.shape) != 2 or v.strides is None:
        return False
    rows, cols = v.shape
    row_stride, col_stride = v.strides
    if cols > 1 and col_stride != 1:
        return False
    if rows <= 1:
        return True
    return row_stride >= (cols if writable else 0)


def _fits(v: ArrayView, layout: str, writable: bool = False) -> bool:
    if not (v.native and v.resolved and v.aligned):
        return False
    return has_rows_layout(v, writable) if layout == "rows" else is_contiguous(v)


def self_overlapping(v: ArrayView) -> bool:
    """True when two different indices reach the same element (a zero stride, a broadcast
    view, rows that overlap): such an array cannot be written element by element."""
    if v.size == 0:
        return False
    extent = v.itemsize  # bytes spanned by the dimensions of smaller stride
    for stride, size in sorted((abs(s), n) for n, s in zip(v.shape, v.byte_strides) if n > 1):
        if stride < extent:
            return True
        extent += stride * (size - 1)
    return False


# ------------------------------------------------------------------------------------------
# Checks shared by inputs and outputs


def same_place(reference: ArrayView, other: ArrayView) -> None:
    """Mixed libraries or devices are an error, never a silent copy."""
    if (other.library, other.device, other.device_index) != (reference.library, reference.device,
                                                             reference.device_index):
        raise ValueError(f"{other.name} is {other.describe()} but {reference.name} is {reference.describe()}: "
                         "pass all arrays from one library and device")


def _check_shape(v: ArrayView, shape: Shape, context: str) -> None:
    got = v.shape
    if len(got) != len(shape):
        text = "a 0-d array" if not got else f"shape {tuple(got)}"
        raise ValueError(f"{v.name} must be {len(shape)}-D{context}, got {text}")
    for expected, size in zip(shape, got):
        if expected is not None and expected != size:
            wanted = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
            raise ValueError(f"{v.name} must have shape {wanted}{context}, got shape {tuple(got)}")


_KIND_NAMES = {"float": "a float dtype", "int": "an integer dtype", "bool": "dtype bool"}


def _target_dtype(v: ArrayView, dtypes: Sequence[str], convert: Mapping[str, str]) -> str:
    if v.dtype in dtypes:
        return v.dtype
    target = convert.get(kind_of(v.dtype))
    if target is not None:
        return target
    accepted = [d for d in dtypes if kind_of(d) not in convert] + [_KIND_NAMES[k] for k in convert]
    wanted = accepted[0] if len(accepted) == 1 else ", ".join(accepted[:-1]) + " or " + accepted[-1]
    if not convert:
        wanted = "dtype " + " or ".join(accepted)
    raise TypeError(f"{v.name} must have {wanted}, got {v.dtype}")


# ------------------------------------------------------------------------------------------
# Inputs


def take(x: Any, name: str, *, like: Optional[ArrayView] = None, shape: Shape, dtypes: Sequence[str],
         convert: Mapping[str, str] = NO_CONVERSION, layout: str = "contiguous", context: str = "") -> ArrayView:
    """An input array as the kernel needs it: as is, or copied once.

    Args:
        x: the caller's array.
        name: the argument's name, used in every error message.
        like: an argument already taken; x must share its library and device.
        shape: the expected shape (None: any size in that dimension).
        dtypes: dtypes the kernel reads as they are.
        convert: ``{kind: dtype}``: dtypes of that kind ("float", "int", "bool") that are not in
            ``dtypes`` are converted to it; other dtypes are a TypeError.
        layout: "contiguous" (C order) or "rows" (``[rows, cols]`` with a unit column stride).
        context: appended to the shape error (e.g. " (one value per reward)").
    """
    return accept(view(x, name), like=like, shape=shape, dtypes=dtypes, convert=convert, layout=layout,
                  context=context)


def accept(v: ArrayView, *, like: Optional[ArrayView] = None, shape: Shape, dtypes: Sequence[str],
           convert: Mapping[str, str] = NO_CONVERSION, layout: str = "contiguous", context: str = "") -> ArrayView:
    """:func:`take` for an array already viewed (when its dtypes depend on where it lives)."""
    if like is not None:
        same_place(like, v)
    _check_shape(v, shape, context)
    dtype = _target_dtype(v, dtypes, convert)
    if dtype == v.dtype and _fits(v, layout):
        return v
    return view(copy_as(v, dtype), v.name)


def copy_as(v: ArrayView, dtype: str) -> Any:
    """One contiguous copy of v in dtype, native byte order, in v's library and device."""
    if v.library == "numpy":
        return np.array(v.array, dtype=np.dtype(dtype), order="C", copy=True)
    if v.library == "torch":
        torch = sys.modules["torch"]
        source = v.array.detach().resolve_neg().resolve_conj()  # no-ops unless a lazy view
        return source.to(dtype=getattr(torch, dtype), memory_format=torch.contiguous_format, copy=True)
    cupy = sys.modules["cupy"]
    with cupy.cuda.Device(v.device_index):
        return cupy.array(v.array, dtype=dtype, order="C", copy=True)


# ------------------------------------------------------------------------------------------
# Outputs


@_memory.advises_fresh_outputs  # huge pages for large fresh CPU outputs (_memory.py)
def fresh(like: ArrayView, shape: Sequence[int], dtype: str, name: str) -> ArrayView:
    """A new, uninitialised array in like's library and device."""
    shape = tuple(int(s) for s in shape)
    if like.library == "numpy":
        return view(np.empty(shape, dtype=dtype), name)
    if like.library == "torch":
        torch = sys.modules["torch"]
        return view(torch.empty(shape, dtype=getattr(torch, dtype), device=like.array.device), name)
    cupy = sys.modules["cupy"]
    with cupy.cuda.Device(like.device_index):
        return view(cupy.empty(shape, dtype=dtype), name)


def zeros(like: Optional[ArrayView], shape: Sequence[int], dtype: str, name: str, value: float = 0) -> ArrayView:
    """A new array filled with value, in like's library and device (numpy when like is None)."""
    if like is None:
        return view(np.full(tuple(shape), value, dtype=dtype), name)
    v = fresh(like, shape, dtype, name)
    if v.library == "torch":
        v.array.fill_(value)
    else:
        v.array.fill(value)
    return v


class Output:
    """A result buffer: the caller's ``out=`` array (or a fresh one) and what the kernel writes."""

    __slots__ = ("target", "kernel")

    def __init__(self, target: ArrayView, kernel: ArrayView) -> None:
        self.target = target  # what the caller gets back
        self.kernel = kernel  # what the kernel writes (target itself unless a copy is needed)

    def finish(self) -> Any:
        """Copies the kernel's buffer into the caller's array where they differ; returns it."""
        if self.kernel is not self.target:
            t, k = self.target.array, self.kernel.array
            if self.target.library == "numpy":
                np.copyto(t, k)
            elif self.target.library == "torch":
                t.copy_(k)
            else:
                t[...] = k
        return self.target.array


def take_out(x: Any, name: str, *, like: ArrayView, shape: Sequence[int], dtype: str, layout: str = "contiguous",
             inputs: Sequence[Optional[ArrayView]] = ()) -> Output:
    """The caller's output array (or a fresh one when x is None) as a kernel output.

    ValueError for another library or device, shape or dtype, a read-only array (numpy
    ``writeable=False``, e.g. a read-only memmap), a torch tensor that requires grad, or
    elements that overlap each other.  An output the kernel cannot write directly (other
    strides, byte order, alignment, memory shared with one of ``inputs``) receives the result
    through one fresh buffer and one copy.
    """
    shape = tuple(int(s) for s in shape)
    if x is None:
        v = fresh(like, shape, dtype, name)
        return Output(v, v)
    v = view(x, name)
    same_place(like, v)
    if tuple(v.shape) != shape or v.dtype != dtype:
        raise ValueError(f"{name} must have shape {shape} and dtype {dtype}, got {tuple(v.shape)} {v.dtype}")
    if not v.writable:
        why = "requires grad (write into a tensor outside autograd)" if v.library == "torch" else "is read-only"
        raise ValueError(f"{name} {why}: the result cannot be written into it")
    fits = _fits(v, layout, writable=True)  # a layout the kernel writes never overlaps itself
    if not fits and self_overlapping(v):
        raise ValueError(f"{name} has elements that share memory (a zero stride or overlapping rows, e.g. a "
                         "broadcast or expanded view): pass a buffer with one element per result")
    direct = fits and not _shares_memory_with(v, inputs)
    return Output(v, v if direct else fresh(like, shape, dtype, name))


def _shares_memory_with(out: ArrayView, inputs: Sequence[Optional[ArrayView]]) -> bool:
    """True when out's memory span meets an input's (conservative: interleaved arrays count)."""
    if out.size == 0:
        return False
    low, high = out.span()
    for i in inputs:
        if i is not None and i.size and i.device_index == out.device_index:
            i_low, i_high = i.span()
            if i_low < high and low < i_high:
                return True
    return False


def current_stream(v: ArrayView) -> int:
    """The caller's current CUDA stream on v's device (0 = the legacy default stream)."""
    if v.library == "torch":
        return sys.modules["torch"].cuda.current_stream(v.array.device).cuda_stream
    if v.library == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(v.device_index):
            return cupy.cuda.get_current_stream().ptr
    return 0


def address_of(v: Optional[ArrayView]) -> int:
    """The address a kernel struct takes for an optional array (0 = absent)."""
    return v.address if v is not None else 0


def host_values(values: Any, name: str) -> Any:
    """Configuration values as numpy where they are a torch tensor or CuPy array (copied to the
    host); numpy arrays, lists and scalars are returned as they are."""
    if library_of(values) in (None, "numpy"):
        return values
    return to_numpy(view(values, name))


def to_numpy(v: ArrayView) -> np.ndarray:
    """The array's values as numpy (a device-to-host copy for CUDA arrays)."""
    if v.library == "numpy":
        return v.array
    if v.library == "torch":
        return v.array.detach().resolve_neg().resolve_conj().cpu().numpy()
    return v.array.get()


def from_numpy(like: Optional[ArrayView], values: np.ndarray, name: str) -> ArrayView:
    """A contiguous copy of numpy values in like's library and device (numpy when None)."""
    values = np.ascontiguousarray(values)
    if like is None or like.library == "numpy":
        return view(values, name)
    v = fresh(like, values.shape, _dtype_name(values.dtype), name)
    if v.library == "torch":
        v.array.copy_(sys.modules["torch"].from_numpy(values))
    else:
        v.array.set(values)
    return v
