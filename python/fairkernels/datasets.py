"""The public data sets behind the semi-synthetic closed-loop benchmarks.

Files are looked up, in order, in ``$FAIRKERNELS_DATA_DIR`` (a local copy, e.g. for machines
without internet) and in the cache directory (``$FAIRKERNELS_CACHE_DIR``, else
``$XDG_CACHE_HOME/fairkernels``, else ``~/.cache/fairkernels``); when absent they are downloaded
from their canonical address into the cache.  A file given explicitly (``path=``) is checked
the same way.  Every file's SHA-256 is checked before use.

What a local copy may differ in, and what it may not:

* line endings are not data: a copy whose line endings were converted (LF <-> CRLF, mixed, e.g.
  by git's ``core.autocrlf`` on Windows or by ``dos2unix``) is accepted and loads identically.
  The SHA-256 is that of the canonical file as published (``german.data`` ends its lines with
  LF, the COMPAS CSV with CRLF), so the check converts the copy's line endings to the
  canonical ones first: every byte of content is still pinned;
* anything else is an error (:class:`DatasetError`) that names the file and the problem:
  an empty file, a compressed file (gzip, bzip2, xz, zip, zstd), a file that is not UTF-8
  text, bare carriage returns, a truncated file, a record with a field missing or inserted,
  columns moved, a value changed.  These messages never quote a field of a record (COMPAS
  holds real people's data): they give line numbers, column numbers or names, and counts.

COMPAS holds names of real people: only the modelling columns are kept while reading (names,
dates of birth, case numbers and ids never leave the CSV reader), and rows are never printed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


class DatasetError(RuntimeError):
    """A data file is missing, cannot be downloaded or read, is damaged, or fails its checksum."""


@dataclass(frozen=True)
class DatasetFile:
    name: str
    filename: str
    url: str
    sha256: str
    rows: int               # records, header excluded
    newline: bytes = b"\n"  # the canonical file's line ending (the SHA-256 is of that file)


GERMAN = DatasetFile(
    "german", "german.data",
    "https://archive.ics.uci.edu/ml/machine-learning-databases/statlog/german/german.data",
    "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871", 1000,
)
COMPAS = DatasetFile(
    "compas", "compas-scores-two-years.csv",
    "https://raw.githubusercontent.com/propublica/compas-analysis/master/compas-scores-two-years.csv",
    "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d", 7214, b"\r\n",
)
FILES = {f.name: f for f in (GERMAN, COMPAS)}


def cache_dir() -> Path:
    """Where downloaded files are kept."""
    if os.environ.get("FAIRKERNELS_CACHE_DIR"):
        return Path(os.environ["FAIRKERNELS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fairkernels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- reading and verifying one file ---------------------------------------------------------

_COMPRESSED = (  # magic bytes -> format (a compressed copy must be decompressed first)
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, not a data file") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None


def _canonical_bytes(raw: bytes, path: Path, spec: DatasetFile) -> bytes:
    """The file's bytes with the canonical line endings; DatasetError for a file that is not
    plain text of this data set (checked before the checksum, so the message says why)."""
    where = f"the file from {spec.url}"
    if not raw.strip():
        raise DatasetError(f"{path}: the file is empty (the {spec.name} data has {spec.rows} records: {spec.url})")
    for magic, kind in _COMPRESSED:
        if raw.startswith(magic):
            raise DatasetError(f"{path}: the file is {kind}-compressed; decompress it first (the {spec.name} data "
                               f"is read as plain text: {where})")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:  # its message quotes the bytes: give the offset only
        raise DatasetError(f"{path}: not UTF-8 text (undecodable byte at offset {error.start}); expected "
                           f"{where}") from None
    if b"\x00" in raw:
        raise DatasetError(f"{path}: holds NUL bytes, not a text file; expected {where}")
    lf = raw.replace(b"\r\n", b"\n")
    if b"\r" in lf:
        line = lf[: lf.index(b"\r")].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line} ends with a bare carriage return (classic Mac line endings); "
                           f"convert the line endings to LF or CRLF")
    return lf if spec.newline == b"\n" else lf.replace(b"\n", spec.newline)


def _read_verified(path: Path, spec: DatasetFile) -> str:
    """The text of a verified copy of ``spec`` at ``path``, with the canonical line endings."""
    raw = _read_bytes(path)
    canonical = _canonical_bytes(raw, path, spec)
    actual = hashlib.sha256(canonical).hexdigest()
    if actual != spec.sha256:
        problem = _DIAGNOSE[spec.name](canonical.decode("utf-8"), spec)
        shown = hashlib.sha256(raw).hexdigest()
        raise DatasetError(
            f"{path}: SHA-256 mismatch for the {spec.name} data (expected {spec.sha256}, got {shown}): {problem}. "
            f"Replace it with the file from {spec.url}."
        )
    return canonical.decode("utf-8")


def _verify(path: Path, spec: DatasetFile) -> Path:
    _read_verified(path, spec)
    return path


# ---- diagnosis of a damaged copy (line numbers, columns and counts; never a field value) ----


def _count_problem(n_records: int, spec: DatasetFile, last_complete: bool) -> Optional[str]:
    if n_records < spec.rows:
        tail = "" if last_complete else ", and its last line is incomplete"
        return f"it holds {n_records} records, the data set {spec.rows}: the file is truncated{tail}"
    if n_records > spec.rows:
        return f"it holds {n_records} records, the data set {spec.rows}: extra lines"
    return None


def _field_count_problem(line: int, got: int, expected: int, last: bool) -> str:
    what = "the file ends there: truncated" if last and got < expected else "a field is missing or inserted"
    return f"line {line} has {got} fields, expected {expected} ({what})"


_GERMAN_NUMERIC = (1, 4, 7, 10, 12, 15, 17, 20)  # 0-based; 12 is age, 20 the class


def _german_field_ok(column: int, value: str) -> bool:
    """Coded attributes hold "A<column><digit>" (column 4 also A410); the others integers."""
    if column == 20:
        return value in ("1", "2")
    if column in _GERMAN_NUMERIC:
        return value.isdigit()
    prefix = f"A{column + 1}"
    code = value[len(prefix):] if value.startswith(prefix) else ""
    return (len(code) == 1 and code.isdigit()) or (column == 3 and code == "10")


def _diagnose_german(text: str, spec: DatasetFile) -> str:
    lines = text.split("\n")
    numbered = [(i + 1, line.split()) for i, line in enumerate(lines) if line.strip()]
    last_line = numbered[-1][0] if numbered else 0
    for line, fields in numbered:
        if len(fields) != 21:
            return _field_count_problem(line, len(fields), 21, line == last_line)
    for line, fields in numbered:
        for column, value in enumerate(fields):
            if not _german_field_ok(column, value):
                return (f"line {line}, column {column + 1}: not a value of that column (columns moved, or a field "
                        f"inserted?)")
    problem = _count_problem(len(numbered), spec, text.endswith("\n"))
    if problem:
        return problem
    if not text.endswith("\n"):
        return "the last line has no line ending (truncated?)"
    return "the records differ from the data set's (a value changed)"


_COMPAS_KEEP = ("sex", "age", "race", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count",
                "days_b_screening_arrest", "c_charge_degree", "is_recid", "score_text", "two_year_recid")
_COMPAS_INTEGER = ("age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count", "two_year_recid",
                   "is_recid")
_COMPAS_CODES = {  # the categories of the kept coded columns (column metadata, not records)
    "sex": ("Female", "Male"),
    "race": ("African-American", "Asian", "Caucasian", "Hispanic", "Native American", "Other"),
    "c_charge_degree": ("F", "M", "O"),
    "score_text": ("High", "Low", "Medium", "N/A"),
}
_INTEGER = re.compile(r"-?\d+")


def _compas_field_ok(column: str, value: str) -> bool:
    if column in _COMPAS_INTEGER:
        return _INTEGER.fullmatch(value) is not None
    if column == "days_b_screening_arrest":
        return value in ("", "NA") or _INTEGER.fullmatch(value) is not None
    return value in _COMPAS_CODES[column]


def _diagnose_compas(text: str, spec: DatasetFile) -> str:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        records = [(reader.line_num, record) for record in reader]  # line where each record ends
    except csv.Error as error:  # csv's messages describe the syntax, never the data
        return f"line {reader.line_num} is not valid CSV ({error})"
    missing = [c for c in _COMPAS_KEEP if c not in header]
    if missing:
        return f"the header lacks the columns {missing} (not this data set's header, or a damaged first line)"
    index: dict[str, int] = {}
    for i, column in enumerate(header):
        index.setdefault(column, i)
    last_line = records[-1][0] if records else 1
    for line, record in records:
        if len(record) != len(header):
            return _field_count_problem(line, len(record), len(header), line == last_line)
    for line, record in records:
        for column in _COMPAS_KEEP:
            if not _compas_field_ok(column, record[index[column]]):
                return (f"line {line}, column {column!r}: not a value of that column (columns moved, or a field "
                        f"inserted?)")
    problem = _count_problem(len(records), spec, text.endswith(spec.newline.decode()))
    if problem:
        return problem
    if not text.endswith(spec.newline.decode()):
        return "the last line has no line ending (truncated?)"
    return "the header or the records differ from the data set's (columns reordered, or a value changed)"


_DIAGNOSE: dict[str, Callable[[str, DatasetFile], str]] = {"german": _diagnose_german, "compas": _diagnose_compas}


# ---- locating a file --------------------------------------------------------------------------


def _locate(spec: DatasetFile, download: bool) -> Path:
    """The first local copy (not yet verified), downloading a verified one when there is none."""
    searched = []
    if os.environ.get("FAIRKERNELS_DATA_DIR"):
        candidate = Path(os.environ["FAIRKERNELS_DATA_DIR"]) / spec.filename
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate
    cached = cache_dir() / spec.filename
    searched.append(str(cached))
    if cached.is_file():
        return cached
    where = (f"Put {spec.filename} (from {spec.url}) in $FAIRKERNELS_DATA_DIR or in {cache_dir()}. "
             f"Looked in: {', '.join(searched)}.")
    if not download:
        raise DatasetError(f"the {spec.name} data is not available locally. {where}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=spec.filename, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        _verify(Path(tmp), spec)
        os.replace(tmp, cached)
    except DatasetError:
        raise
    except OSError as error:  # URLError is an OSError
        raise DatasetError(f"could not download the {spec.name} data ({error}). {where}") from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return cached


def data_path(name: str, *, download: bool = True) -> Path:
    """Path of a verified local copy of data set ``name`` ("german" or "compas")."""
    if name not in FILES:
        raise ValueError(f"name must be one of {', '.join(map(repr, FILES))}, got {name!r}")
    return _verify(_locate(FILES[name], download), FILES[name])


def _read_dataset(name: str, path: Optional[PathLike]) -> str:
    """The text of a verified copy of data set ``name``: the file at ``path`` when given
    (checked like any other copy), else the one :func:`data_path` finds.  The text has the
    canonical file's line endings, whatever the copy's."""
    if name not in FILES:
        raise ValueError(f"name must be one of {', '.join(map(repr, FILES))}, got {name!r}")
    spec = FILES[name]
    if path is None:
        located = _locate(spec, download=True)
    elif isinstance(path, (str, os.PathLike)):
        located = Path(path)
    else:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return _read_verified(located, spec)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Numeric features, categorical features, labels and groups of one data set."""

    numeric: np.ndarray        # [N, p] float64
    numeric_names: tuple[str, ...]
    categorical: np.ndarray    # [N, q] str
    categorical_names: tuple[str, ...]
    label: np.ndarray          # [N] int64, 1 = favourable outcome
    group: np.ndarray          # [N] int64, 0 = group a, 1 = group b

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def __repr__(self) -> str:  # never shows rows
        return (f"Table(rows={len(self)}, numeric={list(self.numeric_names)}, "
                f"categorical={list(self.categorical_names)}, share_a={np.mean(self.group == 0):.3f})")


def load_german(path: Optional[PathLike] = None) -> Table:
    """UCI German Credit: 1000 rows.  Label 1 = good credit; group a = age > 25.  Age (A13) is
    not a feature.  Numeric: A2, A5, A8, A11, A16, A18; categorical: the other 13 attributes.

    Args:
        path: a local copy of ``german.data`` to read instead of the one :func:`data_path`
            finds.  Checked like any copy (see the module doc): converted line endings are
            accepted; anything else that differs from the canonical file raises DatasetError.
    """
    text = _read_dataset("german", path)
    data = np.array([line.split() for line in text.splitlines() if line.strip()], dtype=object)
    numeric_cols = [1, 4, 7, 10, 15, 17]  # A2 A5 A8 A11 A16 A18 (0-based)
    categorical_cols = [0, 2, 3, 5, 6, 8, 9, 11, 13, 14, 16, 18, 19]
    age = data[:, 12].astype(np.float64)
    return Table(
        numeric=data[:, numeric_cols].astype(np.float64),
        numeric_names=tuple(f"A{c + 1}" for c in numeric_cols),
        categorical=data[:, categorical_cols].astype(str),
        categorical_names=tuple(f"A{c + 1}" for c in categorical_cols),
        label=(data[:, 20].astype(np.int64) == 1).astype(np.int64),
        group=(age <= 25).astype(np.int64),
    )


def load_compas_rows(path: Optional[PathLike] = None) -> dict[str, np.ndarray]:
    """The ProPublica two-year file after the standard filter (6172 rows), modelling columns only.
    Identifying columns (names, date of birth, ids, case numbers) are dropped while reading.

    Args:
        path: a local copy of ``compas-scores-two-years.csv`` to read instead of the one
            :func:`data_path` finds; checked like any copy (see the module doc).
    """
    reader = csv.reader(io.StringIO(_read_dataset("compas", path), newline=""))
    header = next(reader)
    index: dict[str, int] = {}
    for i, column in enumerate(header):
        index.setdefault(column, i)  # first occurrence (the file repeats a few columns)
    kept: dict[str, list[str]] = {c: [] for c in _COMPAS_KEEP}
    for record in reader:
        for c in _COMPAS_KEEP:
            kept[c].append(record[index[c]])
    cols = {c: np.array(v, dtype=object) for c, v in kept.items()}
    days = np.array([float(x) if x not in ("", "NA") else np.nan for x in cols["days_b_screening_arrest"]])
    keep = ((days >= -30) & (days <= 30) & (cols["is_recid"].astype(np.int64) != -1)
            & (cols["c_charge_degree"] != "O") & (cols["score_text"] != "N/A"))
    return {c: v[keep] for c, v in cols.items() if c not in ("days_b_screening_arrest", "is_recid", "score_text")}


def load_compas(path: Optional[PathLike] = None) -> Table:
    """COMPAS, standard filter, African-American (group b) vs Caucasian (group a): 5278 rows.
    Label 1 = no recidivism within two years (the favourable outcome).  Race is not a feature.
    Numeric: age, priors and juvenile felony/misdemeanour/other counts; categorical: sex and
    charge degree.  ``path``: as in :func:`load_compas_rows`."""
    rows = load_compas_rows(path)
    race = rows["race"]
    keep = (race == "African-American") | (race == "Caucasian")
    numeric_names = ("age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count")
    categorical_names = ("sex", "c_charge_degree")
    return Table(
        numeric=np.stack([rows[c][keep].astype(np.float64) for c in numeric_names], axis=1),
        numeric_names=numeric_names,
        categorical=np.stack([rows[c][keep].astype(str) for c in categorical_names], axis=1),
        categorical_names=categorical_names,
        label=(rows["two_year_recid"][keep].astype(np.int64) == 0).astype(np.int64),
        group=(race[keep] == "African-American").astype(np.int64),
    )
