"""Damaged local copies of the data files: copies of the real files (../shared/datasets or
$FAIRKERNELS_DATA_DIR), damaged in tmp_path, read by the real loading code through an explicit
``path=`` and through ``$FAIRKERNELS_DATA_DIR``.  Each damage gives a DatasetError that names
the file and the problem and quotes no field of a record; converted line endings load the
same data as the canonical file (the rule in fairkernels.datasets)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from fairkernels import datasets
from fairkernels.datasets import COMPAS, GERMAN, DatasetError, DatasetFile
from fairkernels.envs import make_env

LOADERS = {"german": (datasets.load_german,), "compas": (datasets.load_compas, datasets.load_compas_rows)}
SPECS = {"german": GERMAN, "compas": COMPAS}


def _source_dir() -> Path:
    value = os.environ.get("FAIRKERNELS_DATA_DIR")
    here = Path(value) if value else Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
    if not all((here / s.filename).is_file() for s in SPECS.values()):
        pytest.skip(f"the data files are not in {here} (set FAIRKERNELS_DATA_DIR)")
    return here.resolve()


@pytest.fixture
def originals() -> dict[str, bytes]:
    source = _source_dir()
    return {name: (source / spec.filename).read_bytes() for name, spec in SPECS.items()}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Never the user's cache, never the network: a failed lookup must not download."""
    monkeypatch.setenv("FAIRKERNELS_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", no_network)


# ---- damage: bytes -> (bytes, the 0-based line indices of the damaged records) -----------------


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def truncate_at(fraction: float) -> Callable[[bytes], tuple[bytes, list[int]]]:
    def damage(data: bytes):
        cut = int(len(data) * fraction)
        return data[:cut], [data[:cut].count(b"\n")]
    return damage


def truncate_lines(keep: int):
    def damage(data: bytes):
        return b"".join(_lines(data)[:keep]), [keep - 1]
    return damage


def drop_last_bytes(n: int):
    def damage(data: bytes):
        return data[:-n], [data.count(b"\n") - 1]
    return damage


def empty(data: bytes):
    return b"", []


def blank(data: bytes):
    return b"  \n\n", []


def gzipped(data: bytes):
    return gzip.compress(data), [0, 1, 2]


def bare_cr(data: bytes):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r"), [0, 1]


def not_utf8(data: bytes):
    lines = _lines(data)
    lines[7] = lines[7][:12] + b"\xe9" + lines[7][12:]  # a Latin-1 byte inside a record
    return b"".join(lines), [7]


def _edit_fields(line: bytes, sep: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    ending = line[len(line.rstrip(b"\r\n")):]
    body = line.rstrip(b"\r\n")
    fields = body.split() if sep == b" " else body.split(sep)
    return sep.join(edit(fields)) + ending


def in_record(index: int, edit: Callable[[list[bytes]], list[bytes]]):
    def damage(data: bytes):
        sep = b"," if data.startswith(b"id,") else b" "
        lines = _lines(data)
        lines[index] = _edit_fields(lines[index], sep, edit)
        return b"".join(lines), [index]
    return damage


def in_every_line(edit: Callable[[list[bytes]], list[bytes]]):
    def damage(data: bytes):
        sep = b"," if data.startswith(b"id,") else b" "
        return b"".join(_edit_fields(line, sep, edit) for line in _lines(data)), [0, 1, 2, 3]
    return damage


def insert_field(fields):
    return fields[:3] + [b"7"] + fields[3:]


def remove_field(fields):
    return fields[:3] + fields[4:]


def swap(i: int, j: int):
    def edit(fields):
        fields = list(fields)
        fields[i], fields[j] = fields[j], fields[i]
        return fields
    return edit


def bump_digit(column: int):
    """A value changed, the structure intact: the last digit of an integer field + 1 (mod 10)."""
    def edit(fields):
        fields = list(fields)
        value = fields[column]
        fields[column] = value[:-1] + str((int(value[-1:]) + 1) % 10).encode()
        return fields
    return edit


# COMPAS columns (0-based): 5 sex, 7 age, 9 race, 14 priors_count.
DAMAGES: dict[str, list[tuple[str, Callable, str]]] = {
    "german": [
        ("truncated mid-file", truncate_at(0.5), r"line 501 has \d+ fields?, expected 21 .*truncated"),
        ("truncated near the end", truncate_at(0.9995), r"line 1000 has \d+ fields?, expected 21 .*truncated"),
        ("truncated at a record boundary", truncate_lines(800), r"holds 800 records, the data set 1000: .*truncated"),
        ("last bytes cut", drop_last_bytes(1), r"no line ending \(truncated\?\)"),
        ("empty", empty, r"the file is empty"),
        ("blank", blank, r"the file is empty"),
        ("gzip-compressed", gzipped, r"gzip-compressed; decompress it first"),
        ("bare CR line endings", bare_cr, r"line 1 ends with a bare carriage return"),
        ("not UTF-8", not_utf8, r"not UTF-8 text \(undecodable byte at offset \d+\)"),
        ("a field inserted", in_record(4, insert_field), r"line 5 has 22 fields, expected 21 \(a field is missing"),
        ("a field removed", in_record(4, remove_field), r"line 5 has 20 fields, expected 21 \(a field is missing"),
        ("two fields swapped", in_record(9, swap(0, 1)), r"line 10, column 1: not a value of that column"),
        ("columns moved everywhere", in_every_line(swap(2, 3)), r"line 1, column 3: not a value of that column"),
        ("a value changed", in_record(20, bump_digit(12)), r"SHA-256 mismatch.*a value changed"),
    ],
    "compas": [
        ("truncated mid-file", truncate_at(0.5), r"line 3614 has \d+ fields?, expected 53 .*truncated"),
        ("truncated near the end", truncate_at(0.9999), r"line 7215 has \d+ fields?, expected 53 .*truncated"),
        ("truncated at a record boundary", truncate_lines(4001), r"holds 4000 records, the data set 7214: .*truncated"),
        ("last bytes cut", drop_last_bytes(2), r"no line ending \(truncated\?\)"),
        ("empty", empty, r"the file is empty"),
        ("blank", blank, r"the file is empty"),
        ("gzip-compressed", gzipped, r"gzip-compressed; decompress it first"),
        ("bare CR line endings", bare_cr, r"line 1 ends with a bare carriage return"),
        ("not UTF-8", not_utf8, r"not UTF-8 text \(undecodable byte at offset \d+\)"),
        ("a field inserted", in_record(4, insert_field), r"line 5 has 54 fields, expected 53 \(a field is missing"),
        ("a field removed", in_record(4, remove_field), r"line 5 has 52 fields, expected 53 \(a field is missing"),
        ("sex and age swapped in a record", in_record(9, swap(5, 7)), r"line 10, column 'sex': not a value"),
        ("columns moved everywhere", in_every_line(swap(5, 7)), r"the header or the records differ"),
        ("header damaged", in_record(0, swap(7, 3)), r"line 2, column 'age': not a value of that column"),
        ("a value changed", in_record(20, bump_digit(14)), r"SHA-256 mismatch.*a value changed"),
    ],
}
CASES = [(name, label, damage, match) for name, cases in DAMAGES.items() for label, damage, match in cases]
IDS = [f"{name}: {label}" for name, label, _, _ in CASES]


# ---- the field check ---------------------------------------------------------------------------

# Numbers a message may state, each with its label; whatever digit is left after removing them
# (and the path, the digests, the URL) would be a quoted value.
_LABELLED_NUMBERS = (r"line \d+", r"\d+ fields?", r"expected \d+", r"holds \d+ records", r"the data set \d+",
                     r"has \d+ records", r"column \d+", r"offset \d+", r"SHA-256", r"UTF-8", r"bzip2")


def _fields_of(lines: list[bytes]) -> set[str]:
    text = b"".join(lines).decode("utf-8", errors="replace")
    return {cell.strip() for row in csv.reader(io.StringIO(text, newline="")) for cell in row} - {""}


def damaged_fields(original: bytes, damaged: bytes, rows: list[int]) -> set[str]:
    """Every field of the damaged records, in the damaged file and in the original, and of
    their neighbours (a diagnosis that looked one line off must not slip through).  The COMPAS
    header holds column names, not a record: messages may name columns."""
    fields = set()
    for source in (original, damaged):
        lines = _lines(source)
        first = 1 if original.startswith(b"id,") else 0
        near = sorted({i for r in rows for i in (r - 1, r, r + 1) if first <= i < len(lines)})
        picked = [lines[i] for i in near]
        if not first:  # space-separated german.data: one CSV row per line
            picked = [b",".join(line.split()) + b"\n" for line in picked]
        fields |= _fields_of(picked)
    return fields


def displayed_messages(error: BaseException) -> list[str]:
    """The message of the error and of every exception a traceback would show with it."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return messages


def assert_quotes_no_field(error: BaseException, path: Path, spec: DatasetFile, fields: set[str]) -> None:
    for message in displayed_messages(error):
        scrubbed = message.replace(str(path), " ").replace(spec.url, " ")
        scrubbed = re.sub(r"\b[0-9a-f]{64}\b", " ", scrubbed)
        for pattern in _LABELLED_NUMBERS:
            scrubbed = re.sub(pattern, " ", scrubbed)
        assert not re.search(r"\d", scrubbed), f"an unlabelled number in the message: {scrubbed!r}"
        tokens = set(re.findall(r"[^\s,;:()'\"\[\]]+", scrubbed))
        for field in fields:
            if len(field) >= 4:
                assert field not in scrubbed, "the message quotes a field of a record"
            else:
                assert field not in tokens, "the message quotes a field of a record"


# ---- damaged copies ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,label,damage,match", CASES, ids=IDS)
def test_damaged_copy_through_path_is_a_clear_error(tmp_path, originals, name, label, damage, match):
    spec = SPECS[name]
    data, rows = damage(originals[name])
    path = tmp_path / "copy" / spec.filename
    path.parent.mkdir()
    path.write_bytes(data)
    for loader in LOADERS[name]:
        for given in (path, str(path)):
            with pytest.raises(DatasetError, match=match) as error:
                loader(path=given)
            message = str(error.value)
            assert message.startswith(f"{path}: "), message
            assert_quotes_no_field(error.value, path, spec, damaged_fields(originals[name], data, rows))
    assert path.read_bytes() == data  # the file is only read


@pytest.mark.parametrize("name,label,damage,match", CASES, ids=IDS)
def test_damaged_copy_in_the_data_dir_is_a_clear_error(tmp_path, monkeypatch, originals, name, label, damage, match):
    spec = SPECS[name]
    data, rows = damage(originals[name])
    (tmp_path / spec.filename).write_bytes(data)
    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(tmp_path))
    path = tmp_path / spec.filename
    fields = damaged_fields(originals[name], data, rows)
    for call in (lambda: datasets.data_path(name), lambda: datasets.data_path(name, download=False),
                 *LOADERS[name]):
        with pytest.raises(DatasetError, match=match) as error:
            call()
        assert str(error.value).startswith(f"{path}: ")
        assert_quotes_no_field(error.value, path, spec, fields)


@pytest.mark.parametrize("name", ["german", "compas"])
def test_damaged_copy_through_the_environment_loader(tmp_path, originals, name):
    path = tmp_path / SPECS[name].filename
    path.write_bytes(originals[name][: len(originals[name]) // 3])
    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}: .*truncated"):
        make_env(name, path=path)


def test_every_damage_kind_is_covered():
    """Truncated, empty, CRLF-like (bare CR), gzip-compressed and shifted, for both files."""
    for cases in DAMAGES.values():
        labels = " / ".join(label for label, _, _ in cases)
        for kind in ("truncated", "empty", "bare CR", "gzip", "inserted", "removed", "swapped", "moved"):
            assert kind in labels


# ---- line endings: accepted, same data ----------------------------------------------------------


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _mixed(data: bytes) -> bytes:
    lines = _lines(_lf(data))
    return b"".join(line.replace(b"\n", b"\r\n") if i % 2 else line for i, line in enumerate(lines))


def assert_same_data(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        return
    for field in ("numeric", "categorical", "label", "group"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert (a.numeric_names, a.categorical_names) == (b.numeric_names, b.categorical_names)


@pytest.mark.parametrize("name", ["german", "compas"])
@pytest.mark.parametrize("convert", [_crlf, _lf, _mixed], ids=["crlf", "lf", "mixed"])
def test_converted_line_endings_load_the_same_data(tmp_path, monkeypatch, originals, name, convert):
    spec = SPECS[name]
    canonical = tmp_path / "canonical" / spec.filename
    canonical.parent.mkdir()
    canonical.write_bytes(originals[name])
    converted = tmp_path / "converted" / spec.filename
    converted.parent.mkdir()
    converted.write_bytes(convert(originals[name]))
    for loader in LOADERS[name]:
        assert_same_data(loader(path=converted), loader(path=canonical))
    # Through the data directory too, where data_path returns the converted copy as verified.
    monkeypatch.setenv("FAIRKERNELS_DATA_DIR", str(converted.parent))
    assert datasets.data_path(name, download=False) == converted
    for loader in LOADERS[name]:
        assert_same_data(loader(), loader(path=canonical))


def test_the_checksum_is_of_the_canonical_file(tmp_path, originals):
    """The published SHA-256 is of the canonical bytes (LF for german.data, CRLF for the COMPAS
    CSV); converted line endings are undone before hashing, content changes are not."""
    assert datasets.sha256_of(_source_dir() / GERMAN.filename) == GERMAN.sha256
    assert datasets.sha256_of(_source_dir() / COMPAS.filename) == COMPAS.sha256
    assert originals["german"].count(b"\r") == 0
    assert originals["compas"].count(b"\r\n") == originals["compas"].count(b"\n")
    changed = in_record(20, bump_digit(12))(originals["german"])[0]
    path = tmp_path / "german.data"
    path.write_bytes(_crlf(changed))  # a CRLF copy of a damaged file is still damaged
    with pytest.raises(DatasetError, match="SHA-256 mismatch.*a value changed"):
        datasets.load_german(path)


def test_converted_copy_through_the_environment_loader(tmp_path, originals):
    path = tmp_path / GERMAN.filename
    path.write_bytes(_crlf(originals["german"]))
    converted, canonical = make_env("german", path=path), make_env("german", path=_source_dir() / GERMAN.filename)
    np.testing.assert_array_equal(converted.tpr, canonical.tpr)
    np.testing.assert_array_equal(converted.fpr, canonical.fpr)


# ---- the path argument itself ------------------------------------------------------------------


def test_path_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        datasets.load_german(path=123)
    missing = tmp_path / "nowhere" / "german.data"
    with pytest.raises(DatasetError, match=f"^{re.escape(str(missing))}: no such file$"):
        datasets.load_german(path=missing)
    with pytest.raises(DatasetError, match=f"^{re.escape(str(tmp_path))}: is a directory"):
        datasets.load_compas(path=tmp_path)
