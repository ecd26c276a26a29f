"""The public data sets behind the semi-synthetic closed-loop benchmarks.

Files are looked up, in order, in ``$FAIRKERNELS_DATA_DIR`` (a local copy, e.g. for machines
without internet) and in the cache directory (``$FAIRKERNELS_CACHE_DIR``, else
``$XDG_CACHE_HOME/fairkernels``, else ``~/.cache/fairkernels``); when absent they are downloaded
from their canonical address into the cache.  Every file's SHA-256 is checked before use.

COMPAS holds names of real people: only the modelling columns are kept while reading (names,
dates of birth, case numbers and ids never leave the CSV reader), and rows are never printed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


class DatasetError(RuntimeError):
    """A data file is missing, cannot be downloaded, or fails its checksum."""


@dataclass(frozen=True)
class DatasetFile:
    name: str
    filename: str
    url: str
    sha256: str
    rows: int


GERMAN = DatasetFile(
    "german", "german.data",
    "https://archive.ics.uci.edu/ml/machine-learning-databases/statlog/german/german.data",
    "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871", 1000,
)
COMPAS = DatasetFile(
    "compas", "compas-scores-two-years.csv",
    "https://raw.githubusercontent.com/propublica/compas-analysis/master/compas-scores-two-years.csv",
    "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d", 7214,
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


def _verify(path: Path, spec: DatasetFile) -> Path:
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise DatasetError(
            f"{path}: SHA-256 mismatch for the {spec.name} data (expected {spec.sha256}, got {actual}). "
            f"Replace it with the file from {spec.url}."
        )
    return path


def data_path(name: str, *, download: bool = True) -> Path:
    """Path of a verified local copy of data set ``name`` ("german" or "compas")."""
    if name not in FILES:
        raise ValueError(f"name must be one of {', '.join(map(repr, FILES))}, got {name!r}")
    spec = FILES[name]
    searched = []
    if os.environ.get("FAIRKERNELS_DATA_DIR"):
        candidate = Path(os.environ["FAIRKERNELS_DATA_DIR"]) / spec.filename
        searched.append(str(candidate))
        if candidate.is_file():
            return _verify(candidate, spec)
    cached = cache_dir() / spec.filename
    searched.append(str(cached))
    if cached.is_file():
        return _verify(cached, spec)
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


def load_german(path: Optional[Path] = None) -> Table:
    """UCI German Credit: 1000 rows.  Label 1 = good credit; group a = age > 25.  Age (A13) is
    not a feature.  Numeric: A2, A5, A8, A11, A16, A18; categorical: the other 13 attributes."""
    path = Path(path) if path is not None else data_path("german")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if any(len(r) != 21 for r in rows):
        raise DatasetError(f"{path}: expected 21 space-separated columns per line")
    data = np.array(rows, dtype=object)
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


_COMPAS_KEEP = ("sex", "age", "race", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count",
                "days_b_screening_arrest", "c_charge_degree", "is_recid", "score_text", "two_year_recid")


def load_compas_rows(path: Optional[Path] = None) -> dict[str, np.ndarray]:
    """The ProPublica two-year file after the standard filter (6172 rows), modelling columns only.
    Identifying columns (names, date of birth, ids, case numbers) are dropped while reading."""
    path = Path(path) if path is not None else data_path("compas")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        index = {}
        for i, column in enumerate(header):
            index.setdefault(column, i)  # first occurrence (the file repeats a few columns)
        missing = [c for c in _COMPAS_KEEP if c not in index]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing}")
        kept = {c: [] for c in _COMPAS_KEEP}
        for record in reader:
            for c in _COMPAS_KEEP:
                kept[c].append(record[index[c]])
    cols = {c: np.array(v, dtype=object) for c, v in kept.items()}
    days = np.array([float(x) if x not in ("", "NA") else np.nan for x in cols["days_b_screening_arrest"]])
    keep = ((days >= -30) & (days <= 30) & (cols["is_recid"].astype(np.int64) != -1)
            & (cols["c_charge_degree"] != "O") & (cols["score_text"] != "N/A"))
    return {c: v[keep] for c, v in cols.items() if c not in ("days_b_screening_arrest", "is_recid", "score_text")}


def load_compas(path: Optional[Path] = None) -> Table:
    """COMPAS, standard filter, African-American (group b) vs Caucasian (group a): 5278 rows.
    Label 1 = no recidivism within two years (the favourable outcome).  Race is not a feature.
    Numeric: age, priors and juvenile felony/misdemeanour/other counts; categorical: sex and
    charge degree."""
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
