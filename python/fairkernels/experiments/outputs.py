"""Writing the experiments' result files: atomically, and JSON strictly.

Every file is written to a temporary file in the same folder and then renamed over the target
(``os.replace``), so a crash, a kill or a full disk leaves either the old file or the new one,
never half of one. JSON output is strict (RFC 8259): NaN and infinities, which Python's json
would write as the non-standard tokens ``NaN`` / ``Infinity``, are written as ``null``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence, Union

import numpy as np


class UsageError(ValueError):
    """A command-line problem found before any work starts (the CLI exits with status 2)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())  # the rename must not land before the data
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv_dicts(path: Path, rows: Sequence[Mapping[str, Any]], fieldnames: Optional[Sequence[str]] = None,
                    extrasaction: Literal["raise", "ignore"] = "raise") -> None:
    """A CSV with a header (``fieldnames``, default: the first row's keys), written atomically.

    The bytes are those of ``csv.DictWriter`` on a file opened with ``newline=""`` (rows end in
    CRLF, floats as ``repr``), so files written before this helper existed are reproduced exactly."""
    buffer = io.StringIO(newline="")
    names = list(fieldnames) if fieldnames is not None else (list(rows[0].keys()) if rows else [])
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction=extrasaction)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_csv_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV from a header and value rows (``csv.writer``), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def to_strict(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars and arrays become Python numbers and lists,
    tuples become lists, and every non-finite float (NaN, +-inf) becomes None (JSON null)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return to_strict(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict(v) for v in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def strict_json(value: Any, indent: Optional[int] = 1) -> str:
    """Strict JSON text of ``value`` (see :func:`to_strict`); never emits NaN or Infinity."""
    return json.dumps(to_strict(value), indent=indent, allow_nan=False)


def write_json(path: Path, value: Any, indent: Optional[int] = 1) -> None:
    atomic_write_text(path, strict_json(value, indent) + "\n")


def save_figure(figure: Any, path: Path, **options: Any) -> None:
    """``figure.savefig`` into a temporary file, then renamed over ``path``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", **options)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def prepare_output_dir(path: Union[str, Path], flag: str = "--out") -> Path:
    """Creates ``path`` (and its parents) and proves that a file can be written there, before a
    long run starts. Raises UsageError naming the flag when it cannot."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        try:
            os.write(handle, b"ok")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot write there ({error.strerror or error})") from None
    return path

