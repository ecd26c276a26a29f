"""Validation of scalar options, shared by every kernel family.

Each check names the argument and the problem (TypeError for the wrong type, ValueError for a
value out of range).  Choices that the compiled core knows as an enum are looked up by name in
the enum bound by the core (``_core.Scale``, ``_core.Estimator``, ...), so no code is copied
between Python and C++.
"""

from __future__ import annotations

import functools
import math
import numbers
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence


def choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    """value, which must be one of the allowed strings."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


@functools.cache
def members(enum: Any) -> Mapping[str, Any]:
    """A core enum's members by name (pybind11 builds ``__members__`` anew at every access,
    so the calls on a hot path look them up here)."""
    return MappingProxyType(dict(enum.__members__))


def enum_value(enum: Any, value: Any, name: str) -> Any:
    """The member of a core enum named value (ValueError listing the names otherwise)."""
    table = members(enum)
    return table[choice(value, name, tuple(table))]


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def integer(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """A Python or numpy integer (not a bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_interval(minimum, maximum, False, False)}, got {value}")
    return value


def _interval(low: Optional[float], high: Optional[float], open_low: bool, open_high: bool) -> str:
    if high is None:
        return f"> {low}" if open_low else f">= {low}"
    if low is None:
        return f"< {high}" if open_high else f"<= {high}"
    return ("(" if open_low else "[") + f"{low}, {high}" + (")" if open_high else "]")


def real(value: Any, name: str, low: Optional[float] = None, high: Optional[float] = None, *,
         open_low: bool = False, open_high: bool = False, finite: bool = True) -> float:
    """A real number (not a bool), finite unless finite=False (NaN is always rejected), within
    the interval given by low / high (closed unless open_low / open_high)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = not math.isnan(value) and (math.isfinite(value) or not finite)
    if low is not None:
        ok = ok and (value > low if open_low else value >= low)
    if high is not None:
        ok = ok and (value < high if open_high else value <= high)
    if not ok:
        what = "finite" if finite else "a number (not NaN)"
        if low is not None or high is not None:
            interval = _interval(low, high, open_low, open_high)
            what += f" and {interval}" if interval[0] in "<>" else f" and in {interval}"
        raise ValueError(f"{name} must be {what}, got {value}")
    return value
