"""argparse ``type=`` callables and actions shared by the experiment commands.

Each callable turns one command-line word into a checked value or raises
``argparse.ArgumentTypeError``, so a bad flag ends the command at parse time with exit status 2
and one error line naming the flag, before anything runs.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional, Sequence


def integer(minimum: Optional[int] = None, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An int in [minimum, maximum] (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def real(low: Optional[float] = None, high: Optional[float] = None, *, open_low: bool = False,
         open_high: bool = False) -> Callable[[str], float]:
    """A finite float in the interval given by low/high (closed unless open_low / open_high)."""
    opening = "(-inf" if low is None else f"{'(' if open_low else '['}{low:g}"
    closing = "inf)" if high is None else f"{high:g}{')' if open_high else ']'}"
    interval = f"{opening}, {closing}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = math.isfinite(value)
        if low is not None:
            inside = inside and (value > low if open_low else value >= low)
        if high is not None:
            inside = inside and (value < high if open_high else value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(f"must be finite and in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = integer(1)
non_negative_int = integer(0)


class UniqueValues(argparse.Action):
    """Stores a ``nargs`` list and rejects repeated values: a repeated sweep value would be one
    cell asked for twice (and, in a table, two columns of the same setting)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        items: Sequence[Any] = values if isinstance(values, list) else [values]
        seen: list[Any] = []
        for item in items:
            if item in seen:
                parser.error(f"argument {option_string}: {item!r} is given twice")
            seen.append(item)
        setattr(namespace, self.dest, list(items))
