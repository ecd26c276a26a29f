"""Memory layouts of the same values, for the layout tests of every entry point.

``numpy_layout(a, kind)`` and ``torch_layout(t, kind)`` return an array whose *values* equal
those of the contiguous ``a`` but whose memory layout is ``kind`` (a view into a larger
buffer, a reversed or transposed view, another byte order, ...).  Two kinds change the values
on purpose, because no other array has that layout: "broadcast" repeats the first element
(1-D) or the first row (2-D) with a zero stride.  The tests therefore compare a call on the
layout with the same call on ``np.ascontiguousarray(layout)``, never on ``a``.
"""

from __future__ import annotations

import numpy as np

# Layouts an input may have; every one must give the result of its contiguous copy.
NUMPY_INPUT_LAYOUTS_1D = ("contiguous", "strided", "reversed", "column", "broadcast", "byteswapped", "readonly",
                          "unaligned", "field", "offset")
NUMPY_INPUT_LAYOUTS_2D = ("contiguous", "fortran", "padded", "reversed_rows", "reversed_cols", "strided_rows",
                          "broadcast", "byteswapped", "readonly", "unaligned", "strided_cols")
TORCH_INPUT_LAYOUTS_1D = ("contiguous", "strided", "column", "broadcast", "offset", "neg_view", "requires_grad")
TORCH_INPUT_LAYOUTS_2D = ("contiguous", "fortran", "padded", "strided_rows", "broadcast", "strided_cols",
                          "neg_view")


def numpy_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The values of a (contiguous) in the memory layout ``kind``."""
    a = np.ascontiguousarray(a)
    if kind == "contiguous":
        return a.copy()
    if kind == "strided":  # every third element of a larger buffer
        buf = np.zeros((a.shape[0] * 3,) + a.shape[1:], a.dtype)
        buf[::3] = a
        return buf[::3]
    if kind == "reversed":  # negative stride
        return a[::-1].copy()[::-1]
    if kind == "column":  # a column of a row-major matrix
        buf = np.zeros(a.shape + (3,), a.dtype)
        buf[..., 1] = a
        return buf[..., 1]
    if kind == "broadcast":  # zero stride: repeats the first element / row
        first = a[:1].copy() if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
        return np.broadcast_to(first, a.shape)
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder("S"))
    if kind == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if kind == "unaligned":  # data one byte past an aligned address
        raw = np.zeros(a.nbytes + a.itemsize + 1, np.uint8)
        b = raw[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        b[...] = a
        return b
    if kind == "field":  # a field of a structured array: stride not a multiple of the itemsize
        rec = np.zeros(a.shape, dtype=[("x", a.dtype), ("pad", "u1")])
        rec["x"] = a
        return rec["x"]
    if kind == "offset":  # a slice starting inside a buffer
        buf = np.zeros((a.shape[0] + 5,) + a.shape[1:], a.dtype)
        buf[5:] = a
        return buf[5:]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "padded":  # rows of a wider buffer (row stride > T)
        buf = np.zeros((a.shape[0], a.shape[1] + 7), a.dtype)
        buf[:, :a.shape[1]] = a
        return buf[:, :a.shape[1]]
    if kind == "reversed_rows":
        return a[::-1].copy()[::-1]
    if kind == "reversed_cols":
        return a[:, ::-1].copy()[:, ::-1]
    if kind == "strided_rows":
        buf = np.zeros((a.shape[0] * 2, a.shape[1]), a.dtype)
        buf[::2] = a
        return buf[::2]
    if kind == "strided_cols":
        buf = np.zeros((a.shape[0], a.shape[1] * 2), a.dtype)
        buf[:, ::2] = a
        return buf[:, ::2]
    raise ValueError(kind)


def torch_layout(t, kind: str):
    """torch twin of :func:`numpy_layout` (torch has no negative strides or byte orders; it has
    negation views and autograd leaves instead)."""
    import torch

    t = t.contiguous()
    if kind == "contiguous":
        return t.clone()
    if kind == "strided":
        buf = torch.zeros((t.shape[0] * 3,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        buf[::3] = t
        return buf[::3]
    if kind == "column":
        buf = torch.zeros(tuple(t.shape) + (3,), dtype=t.dtype, device=t.device)
        buf[..., 1] = t
        return buf[..., 1]
    if kind == "broadcast":
        first = t[:1].clone() if t.shape[0] else torch.zeros((1,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        return first.expand(t.shape)
    if kind == "offset":
        buf = torch.zeros((t.shape[0] + 5,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        buf[5:] = t
        return buf[5:]
    if kind == "neg_view":  # a lazily negated view: its memory holds -t, its values are t
        if t.dtype == torch.bool or not t.dtype.is_floating_point:
            return t.clone()
        return torch._neg_view(-t)
    if kind == "requires_grad":
        return t.clone().requires_grad_(t.dtype.is_floating_point)
    if kind == "fortran":
        return t.t().contiguous().t() if t.dim() == 2 else t.clone()
    if kind == "padded":
        buf = torch.zeros((t.shape[0], t.shape[1] + 7), dtype=t.dtype, device=t.device)
        buf[:, :t.shape[1]] = t
        return buf[:, :t.shape[1]]
    if kind == "strided_rows":
        buf = torch.zeros((t.shape[0] * 2, t.shape[1]), dtype=t.dtype, device=t.device)
        buf[::2] = t
        return buf[::2]
    if kind == "strided_cols":
        buf = torch.zeros((t.shape[0], t.shape[1] * 2), dtype=t.dtype, device=t.device)
        buf[:, ::2] = t
        return buf[:, ::2]
    raise ValueError(kind)


def contiguous_copy(x):
    """A fresh contiguous, native, writable copy with the same values (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return np.array(x, dtype=x.dtype.newbyteorder("="), order="C", copy=True)
    return x.detach().resolve_neg().contiguous().clone()


def snapshot(x):
    """A copy of x's values and raw bytes, to check later that a call left x unmodified."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    return x.detach().resolve_neg().clone()


def assert_unmodified(before, x) -> None:
    if x is None:
        return
    if isinstance(x, np.ndarray):
        np.testing.assert_array_equal(np.asarray(x), before)
        return
    np.testing.assert_array_equal(x.detach().resolve_neg().cpu().numpy(), before.cpu().numpy())


def assert_bitwise_equal(got, expected) -> None:
    """Same values bit for bit (NaN at the same places), for numpy arrays or torch tensors."""
    if got is None or expected is None:
        assert got is None and expected is None
        return
    if not isinstance(got, np.ndarray):
        got, expected = got.detach().cpu().numpy(), expected.detach().cpu().numpy()
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("="), (got.dtype, expected.dtype)
    native = got.dtype.newbyteorder("=")
    got_bytes = np.ascontiguousarray(got, dtype=native).reshape(-1).view(np.uint8)
    expected_bytes = np.ascontiguousarray(expected, dtype=native).reshape(-1).view(np.uint8)
    np.testing.assert_array_equal(got_bytes, expected_bytes)
