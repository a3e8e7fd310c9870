"""Delimited click-event lines -> typed events, every bad row quarantined with its reason.

Ray-free and a pure function of one batch of lines, so the ingest step can
map it over the blocks of ``ray.data.read_text``. No row is dropped silently:
a line is a good event, a bad row with a ``BadRowReason`` and a detail naming
the field and its value, or skipped because it is blank or the file's header.
Quoted fields are not supported (click logs have none).

>>> good, bad = parse_events(["1,2,881250949,5", "1,x1,881250949,3"], [2, 3], EventFormat())
>>> good.label.tolist(), bad.detail.tolist()
([1.0], ["item_id='x1' is not an integer"])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from itertools import repeat
from operator import methodcaller
from typing import Callable

import numpy as np
import pandas as pd

KEYS = ("user_id", "item_id")
REQUIRED = (*KEYS, "timestamp")
BAD_COLUMNS = ("line_number", "raw", "reason", "detail")  # the quarantine's schema
# Conventional spellings of "no value" in exported logs: a key spelled so is a null key.
NULL_MARKERS = frozenset({"", "null", "none", "nan", "na", "n/a", "\\n"})
_INT = re.compile(r"[+-]?[0-9]+")
# A decimal literal ("4", "3.5", ".5", "8.8125e8"): sign, integer digits, fraction digits, exponent.
_FLOAT = re.compile(r"([+-]?)(?=\.?[0-9])([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SHORT = 18  # decimal digits that always fit in int64


class BadRowReason(str, Enum):
    wrong_field_count = "wrong_field_count"  # truncated line or extra fields
    null_key = "null_key"  # empty user_id or item_id
    unparseable = "unparseable"  # a value that does not parse as its type ("abc", or "1.5" for an id)
    wrong_type = "wrong_type"  # parses but breaks the field's contract (timestamp <= 0, NaN rating, label 2)


# A row with several problems is filed under the first reason in this order, then the first field.
_PRIORITY = {BadRowReason.null_key: 0, BadRowReason.unparseable: 1, BadRowReason.wrong_type: 2}
Problem = tuple[BadRowReason, str]


@dataclass(frozen=True)
class EventFormat:
    """How a click-event file is laid out, e.g. MovieLens' ``ml-100k.inter``:

    ``EventFormat("\\t", columns=header_columns(first_line, "\\t"))``
    """

    delimiter: str = ","
    header: bool = True  # the line numbered 1 is the header (numbers unknown: a line naming the columns)
    # Column names in file order; columns other than the event fields are only counted.
    columns: tuple[str, ...] = ("user_id", "item_id", "timestamp", "rating")
    click_threshold: float = 4.0  # rating >= this is a click, when there is no `label` column

    def __post_init__(self):
        object.__setattr__(self, "columns", tuple(self.columns))  # Hydra passes lists
        if not self.delimiter or "\n" in self.delimiter or "\r" in self.delimiter:
            raise ValueError(f"EventFormat.delimiter={self.delimiter!r} must be a non-empty string without newlines")
        missing = [c for c in REQUIRED if c not in self.columns] + ([] if {"rating", "label"} & set(self.columns) else ["rating or label"])
        if missing:
            raise ValueError(f"EventFormat.columns={self.columns!r} lacks {', '.join(missing)}")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"EventFormat.columns={self.columns!r} names a column twice")
        if not math.isfinite(self.click_threshold):
            raise ValueError(f"EventFormat.click_threshold={self.click_threshold!r} must be finite")


def header_columns(header_line: str, delimiter: str) -> tuple[str, ...]:
    """Column names from a header line, without ``:type`` suffixes or whitespace.

    >>> header_columns("user_id:token\\titem_id:token\\trating:float\\n", "\\t")
    ('user_id', 'item_id', 'rating')
    """
    return tuple(f.split(":", 1)[0].strip() for f in header_line.lstrip("\ufeff").split(delimiter))


# Scalar parsers: one stripped-or-not raw value -> the typed value, or a Problem. They define
# the rules; the bulk paths below only skip them for values they cannot reject.


def _scalar_id(name: str, raw: str) -> int | Problem:
    v = raw.strip()
    if v.lower() in NULL_MARKERS:
        return BadRowReason.null_key, f"{name} is empty" if v == "" else f"{name}={v!r} is null"
    if not _INT.fullmatch(v):
        return BadRowReason.unparseable, f"{name}={v!r} is not an integer"
    x = int(v)
    if not _INT64[0] <= x <= _INT64[1]:
        return BadRowReason.unparseable, f"{name}={v!r} does not fit in a 64-bit integer"
    if x < 0:
        return BadRowReason.wrong_type, f"{name}={v!r} is negative"
    return x


def _scalar_timestamp(raw: str) -> int | Problem:
    v = raw.strip()
    if v == "":
        return BadRowReason.unparseable, "timestamp is empty"
    if not (number := _FLOAT.fullmatch(v)):
        return BadRowReason.unparseable, f"timestamp={v!r} is not a number"
    x = _whole(*number.groups())
    if x is None:
        return BadRowReason.unparseable, f"timestamp={v!r} is not a whole number"
    if not _INT64[0] <= x <= _INT64[1]:
        return BadRowReason.unparseable, f"timestamp={v!r} does not fit in a 64-bit integer"
    if x <= 0:
        return BadRowReason.wrong_type, f"timestamp={v!r} is not positive"
    return x


def _whole(sign: str, integer: str, fraction: str | None, exponent: str | None) -> int | None:
    """The exact integer a decimal literal names ("881250949.0", "8.8125e8"), None if it has a fraction."""
    fraction = fraction or ""
    digits, shift = (integer + fraction).rstrip("0"), int(exponent or 0) - len(fraction)
    shift += len(integer + fraction) - len(digits)  # the trailing zeros just stripped
    if not digits.lstrip("0"):
        return 0
    if shift < 0:
        return None
    if len(digits.lstrip("0")) + shift > 20:  # far beyond int64; don't build a huge int for "1e999999999"
        return 2**64
    return int(sign + digits) * 10**shift


def _scalar_float(name: str, raw: str) -> float | Problem:
    v = raw.strip()
    if _FLOAT.fullmatch(v):
        x = float(v)
        if abs(x) > _FLOAT32_MAX:
            return BadRowReason.wrong_type, f"{name}={v!r} is out of float32 range"
        return x
    if _NONFINITE.fullmatch(v):
        return BadRowReason.wrong_type, f"{name}={v!r} is not finite"
    return BadRowReason.unparseable, f"{name} is empty" if v == "" else f"{name}={v!r} is not a number"


def _scalar_label(raw: str) -> float | Problem:
    x = _scalar_float("label", raw)
    if isinstance(x, tuple) and x[0] is BadRowReason.unparseable:
        return x
    if isinstance(x, tuple) or x not in (0.0, 1.0):
        return BadRowReason.wrong_type, f"label={raw.strip()!r} is not 0 or 1"
    return x


# Bulk paths: a mask of plain values (ASCII digits, at most one '.'), converted in C.


def _flags(test: Callable[[str], bool], values) -> np.ndarray:
    return np.fromiter(map(test, values), dtype=bool, count=len(values))


def _plain_ints(col: list[str]) -> np.ndarray:
    short = np.fromiter(map(len, col), dtype=np.int64, count=len(col)) <= _SHORT
    return _flags(str.isdigit, col) & _flags(str.isascii, col) & short


def _plain_decimals(col: list[str]) -> np.ndarray:
    return _flags(str.isdigit, list(map(methodcaller("replace", ".", "", 1), col))) & _flags(str.isascii, col)


def _parse(col: list[str], plain: np.ndarray, dtype, convert, valid, scalar, raw: list[str] | None = None) -> tuple[np.ndarray, dict[int, Problem]]:
    """Typed values of ``col``: plain ones converted in bulk, the rest (and invalid ones) one by one from ``raw``."""
    raw = col if raw is None else raw
    values = np.zeros(len(col), dtype=dtype)
    idx = np.flatnonzero(plain)
    fine = np.zeros(len(col), dtype=bool)
    if len(idx):
        values[idx] = np.fromiter(map(convert, col if len(idx) == len(col) else [col[i] for i in idx]), dtype=dtype, count=len(idx))
        fine[idx] = valid(values[idx])
    problems: dict[int, Problem] = {}
    for i in np.flatnonzero(~fine):
        out = scalar(raw[i])
        if isinstance(out, tuple):
            problems[int(i)], out = out, 0  # no out-of-range leftovers in bad rows
        values[i] = out
    return values, problems


def _parse_id(name: str, col: list[str]):
    return _parse(col, _plain_ints(col), np.int64, int, lambda v: v >= 0, lambda raw: _scalar_id(name, raw))


def _parse_timestamp(col: list[str]):
    plain = col
    if any(map(methodcaller("endswith", ".0"), col)):
        plain = [v[:-2] if v.endswith(".0") else v for v in col]  # "123.0" -> "123"; others still fail the mask
    return _parse(plain, _plain_ints(plain), np.int64, int, lambda v: v > 0, _scalar_timestamp, raw=col)


def _parse_rating(col: list[str]):
    return _parse(col, _plain_decimals(col), np.float64, float, lambda v: v <= _FLOAT32_MAX, lambda raw: _scalar_float("rating", raw))


def _parse_label(col: list[str]):
    return _parse(col, _plain_decimals(col), np.float64, float, lambda v: (v == 0) | (v == 1), _scalar_label)


_PARSERS = {
    "user_id": lambda col: _parse_id("user_id", col),
    "item_id": lambda col: _parse_id("item_id", col),
    "timestamp": _parse_timestamp,
    "rating": _parse_rating,
    "label": _parse_label,
}


def _is_header(line: str, number: int, fmt: EventFormat) -> bool:
    """The file's header: line 1 when numbers are known (and it must match), else a line naming the columns."""
    if not fmt.header or number > 1:
        return False
    found = header_columns(line, fmt.delimiter)
    if number < 0:
        return found == fmt.columns
    if found != fmt.columns:
        # Parsing on would file every value under the wrong column (ml-100k has rating before timestamp).
        raise ValueError(
            f"The header {line.rstrip()!r} names the columns {found} but the format expects {fmt.columns}; "
            "build the EventFormat with columns=header_columns(<first line>, delimiter)."
        )
    return True


def parse_events(lines: list[str], line_numbers: list[int] | None, fmt: EventFormat) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(good, bad)`` from one batch of lines; ``line_numbers`` are 1-based file lines, None if unknown.

    good: ``user_id``, ``item_id``, ``timestamp`` (int64), ``label`` (float32 0/1) and ``rating``
    (float32) if the format has one. bad: ``line_number`` (int64, -1 if unknown), ``raw`` (the
    line as given), ``reason`` (a ``BadRowReason`` value), ``detail``. Blank lines and the header
    are skipped; every other line is in exactly one of the two.
    """
    lines = list(lines)
    n, width, delim = len(lines), len(fmt.columns), fmt.delimiter
    if line_numbers is not None and len(line_numbers) != n:
        raise ValueError(f"parse_events got {n} lines but {len(line_numbers)} line numbers")
    numbers = np.full(n, -1, dtype=np.int64) if line_numbers is None else np.asarray(line_numbers, dtype=np.int64).reshape(n)
    counted = np.fromiter(map(str.count, lines, repeat(delim)), dtype=np.int64, count=n) == width - 1
    skipped = _flags(str.isspace, lines) | (np.fromiter(map(len, lines), dtype=np.int64, count=n) == 0)
    if fmt.header:
        candidates = numbers == 1
        if (numbers < 0).any():  # position unknown: only lines that contain the first column's name
            candidates |= (numbers < 0) & _flags(methodcaller("__contains__", fmt.columns[0]), lines)
        for i in np.flatnonzero(candidates & ~skipped):
            skipped[i] = _is_header(lines[i], int(numbers[i]), fmt)
    data = np.flatnonzero(counted & ~skipped)
    miscounted = np.flatnonzero(~counted & ~skipped)

    typed, problems = _parse_columns([lines[i] for i in data], fmt)
    keep = np.ones(len(data), dtype=bool)
    keep[list(problems)] = False
    good = pd.DataFrame({name: column[keep] for name, column in typed.items()})
    expected = f"expected {width} fields ({', '.join(fmt.columns)}) separated by {delim!r}"
    rows = [(int(i), BadRowReason.wrong_field_count, f"{expected}, found {lines[i].count(delim) + 1}") for i in miscounted]
    rows += [(int(data[k]), reason, detail) for k, (reason, detail) in problems.items()]
    rows.sort(key=lambda r: r[0])
    bad = pd.DataFrame(
        {
            "line_number": numbers[[i for i, _, _ in rows]].astype(np.int64),
            "raw": pd.Series([lines[i] for i, _, _ in rows], dtype=object),
            "reason": pd.Series([reason.value for _, reason, _ in rows], dtype=object),
            "detail": pd.Series([detail for _, _, detail in rows], dtype=object),
        }
    )
    return good, bad


def _parse_columns(lines: list[str], fmt: EventFormat) -> tuple[dict[str, np.ndarray], dict[int, Problem]]:
    """Typed event columns of lines with the right field count; per bad line its first problem."""
    width = len(fmt.columns)
    fields = fmt.delimiter.join(lines).split(fmt.delimiter) if lines else []  # one split: (n * width,)
    values: dict[str, np.ndarray] = {}
    found: dict[int, tuple[tuple[int, int], BadRowReason, str]] = {}
    for position, name in enumerate(fmt.columns):
        if name not in _PARSERS:
            continue
        values[name], problems = _PARSERS[name](fields[position::width])
        for k, (reason, detail) in problems.items():
            rank = (_PRIORITY[reason], position)
            if k not in found or rank < found[k][0]:
                found[k] = (rank, reason, detail)
    typed = {name: values[name] for name in REQUIRED}
    # float64 up to here: the click is decided on the value as written, not its float32 rounding.
    typed["label"] = (values["label"] if "label" in values else values["rating"] >= fmt.click_threshold).astype(np.float32)
    if "rating" in values:
        typed["rating"] = values["rating"].astype(np.float32)
    return typed, {k: (reason, detail) for k, (_, reason, detail) in sorted(found.items())}


@dataclass(frozen=True)
class QuarantineSummary:
    """Counts of good and bad rows, merged across blocks.

    >>> QuarantineSummary(rows=10, bad=1, by_reason={"null_key": 1}).bad_fraction
    0.1
    """

    rows: int  # data rows seen: good + bad (blank lines and headers are not rows)
    bad: int
    by_reason: dict[str, int]

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.rows if self.rows else 0.0

    @classmethod
    def of(cls, good_rows: int, bad: pd.DataFrame) -> "QuarantineSummary":
        counts = {str(k): int(v) for k, v in bad["reason"].value_counts().items()} if len(bad) else {}
        return cls(rows=good_rows + len(bad), bad=len(bad), by_reason=_ordered(counts))

    def merge(self, other: "QuarantineSummary") -> "QuarantineSummary":
        by_reason = dict(self.by_reason)
        for reason, n in other.by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
        return QuarantineSummary(rows=self.rows + other.rows, bad=self.bad + other.bad, by_reason=_ordered(by_reason))


def _ordered(by_reason: dict[str, int]) -> dict[str, int]:
    """Most frequent reason first, ties by name: stable reports and messages."""
    return dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
