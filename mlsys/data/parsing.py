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
    """How an event file is laid out, e.g. MovieLens' ``ml-100k.inter``:

    ``EventFormat("\\t", columns=header_columns(first_line, "\\t"))``

    ``roles`` maps each role (``user_id``, ``item_id``, ``timestamp``, and ``label`` or
    ``rating``) to the file's column for it (default: the column named like the role);
    ``features`` are the event features to parse, ``(column, kind)`` with kind one of
    ``categorical``, ``numeric``, ``multi_hot`` (values separated by ``separator``), or
    ``sequence`` (a given behaviour sequence of item ids, parsed into ``history``). Other
    columns are only counted. Parsed events name the roles by role, features by column.
    """

    delimiter: str = ","
    header: bool = True  # the line numbered 1 is the header (numbers unknown: a line naming the columns)
    # Column names in file order; columns other than the event fields are only counted.
    columns: tuple[str, ...] = ("user_id", "item_id", "timestamp", "rating")
    click_threshold: float = 4.0  # rating >= this is a click, when there is no `label` role
    roles: tuple[tuple[str, str], ...] = ()  # (role, column); a role not given is the column of its name
    features: tuple[tuple[str, str], ...] = ()  # (column, kind)
    separator: str = "|"

    def __post_init__(self):
        object.__setattr__(self, "columns", tuple(self.columns))  # Hydra passes lists
        object.__setattr__(self, "roles", tuple((r, c) for r, c in dict(self.roles).items()))
        object.__setattr__(self, "features", tuple((c, k) for c, k in dict(self.features).items()))
        if not self.delimiter or "\n" in self.delimiter or "\r" in self.delimiter:
            raise ValueError(f"EventFormat.delimiter={self.delimiter!r} must be a non-empty string without newlines")
        sources = self.sources
        missing = [sources[r] for r in REQUIRED if sources[r] not in self.columns]
        targets = [sources[r] for r in ("rating", "label") if r in sources]
        if not set(targets) & set(self.columns):
            missing.append(" or ".join(targets))
        missing += [c for c, _ in self.features if c not in self.columns]
        if missing:
            raise ValueError(f"EventFormat.columns={self.columns!r} lacks {', '.join(missing)}")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"EventFormat.columns={self.columns!r} names a column twice")
        if not math.isfinite(self.click_threshold):
            raise ValueError(f"EventFormat.click_threshold={self.click_threshold!r} must be finite")
        unknown = [k for _, k in self.features if k not in _FEATURE_PARSERS]
        if unknown:
            raise ValueError(f"EventFormat.features has kinds {unknown}; expected {sorted(_FEATURE_PARSERS)}")

    @property
    def sources(self) -> dict[str, str]:
        """Every role's column (rating and label both, whichever the file has)."""
        given = dict(self.roles)
        target = ("rating", "label") if not {"rating", "label"} & set(given) else ()
        return {**{r: r for r in (*REQUIRED, *target)}, **given}


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


def _scalar_timestamp(name: str, raw: str) -> int | Problem:
    v = raw.strip()
    if v == "":
        return BadRowReason.unparseable, f"{name} is empty"
    if not (number := _FLOAT.fullmatch(v)):
        return BadRowReason.unparseable, f"{name}={v!r} is not a number"
    x = _whole(*number.groups())
    if x is None:
        return BadRowReason.unparseable, f"{name}={v!r} is not a whole number"
    if not _INT64[0] <= x <= _INT64[1]:
        return BadRowReason.unparseable, f"{name}={v!r} does not fit in a 64-bit integer"
    if x <= 0:
        return BadRowReason.wrong_type, f"{name}={v!r} is not positive"
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


def _scalar_label(name: str, raw: str) -> float | Problem:
    x = _scalar_float(name, raw)
    if isinstance(x, tuple) and x[0] is BadRowReason.unparseable:
        return x
    if isinstance(x, tuple) or x not in (0.0, 1.0):
        return BadRowReason.wrong_type, f"{name}={raw.strip()!r} is not 0 or 1"
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


def _parse_timestamp(name: str, col: list[str]):
    plain = col
    if any(map(methodcaller("endswith", ".0"), col)):
        plain = [v[:-2] if v.endswith(".0") else v for v in col]  # "123.0" -> "123"; others still fail the mask
    return _parse(plain, _plain_ints(plain), np.int64, int, lambda v: v > 0, lambda raw: _scalar_timestamp(name, raw), raw=col)


def _parse_rating(name: str, col: list[str]):
    return _parse(col, _plain_decimals(col), np.float64, float, lambda v: v <= _FLOAT32_MAX, lambda raw: _scalar_float(name, raw))


def _parse_label(name: str, col: list[str]):
    return _parse(col, _plain_decimals(col), np.float64, float, lambda v: (v == 0) | (v == 1), lambda raw: _scalar_label(name, raw))


def _scalar_number(name: str, raw: str) -> float | Problem:
    """A numeric feature: a null marker is a missing value (NaN), anything else must be a finite number."""
    if raw.strip().lower() in NULL_MARKERS:
        return math.nan
    return _scalar_float(name, raw)


def _parse_numeric(name: str, col: list[str], separator: str):
    values, problems = _parse(col, _plain_decimals(col), np.float64, float, lambda v: v <= _FLOAT32_MAX,
                              lambda raw: _scalar_number(name, raw))
    return values.astype(np.float32), problems


def _parse_categorical(name: str, col: list[str], separator: str):
    """A categorical feature: the value as text, stripped; a null marker is a missing value (None)."""
    stripped = list(map(str.strip, col))
    return np.array([None if v.lower() in NULL_MARKERS else v for v in stripped], dtype=object), {}


def split_values(text: str, separator: str) -> list[str]:
    """A multi-valued text field's values: split at ``separator``, stripped, empty and null ones dropped.

    >>> split_values(" sale | | new|NA", "|")
    ['sale', 'new']
    """
    items = (x.strip() for x in text.split(separator))
    return [x for x in items if x and x.lower() not in NULL_MARKERS]


def _parse_multi_hot(name: str, col: list[str], separator: str):
    """A multi-hot feature: :func:`split_values` of each field (no value: ``[]``)."""
    out = np.empty(len(col), dtype=object)
    for i, v in enumerate(col):  # one by one: numpy would make equal-length lists a 2-D array
        out[i] = split_values(v, separator)
    return out, {}


def _parse_sequence(name: str, col: list[str], separator: str):
    """A given behaviour sequence: item ids separated by ``separator`` (oldest first); no value: ``[]``."""
    out = np.empty(len(col), dtype=object)
    problems: dict[int, Problem] = {}
    for i, v in enumerate(col):
        items = split_values(v, separator)
        bad = next((x for x in items if not (x.isascii() and x.isdigit() and len(x) <= _SHORT)), None)
        if bad is not None:
            problems[i] = (BadRowReason.unparseable, f"{name}={v.strip()!r} holds {bad!r}, not an item id")
            items = []
        out[i] = [int(x) for x in items]
    return out, problems


_PARSERS = {
    "user_id": lambda name, col: _parse_id(name, col),
    "item_id": lambda name, col: _parse_id(name, col),
    "timestamp": _parse_timestamp,
    "rating": _parse_rating,
    "label": _parse_label,
}
_FEATURE_PARSERS = {"categorical": _parse_categorical, "numeric": _parse_numeric, "multi_hot": _parse_multi_hot,
                    "sequence": _parse_sequence}


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
    (float32) if the format has one, whatever the file calls them (``fmt.roles``), then the
    format's features by their column names: categorical as text (None: missing), numeric as
    float32 (NaN: missing), multi-hot as lists of text. bad: ``line_number`` (int64, -1 if unknown), ``raw`` (the
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
    position = {c: i for i, c in enumerate(fmt.columns)}
    parsers = [(role, column, lambda name, col, p=_PARSERS[role]: p(name, col)) for role, column in fmt.sources.items()
               if column in position and role in _PARSERS]
    parsers += [(column, column, lambda name, col, p=_FEATURE_PARSERS[kind]: p(name, col, fmt.separator)) for column, kind in fmt.features]
    values: dict[str, np.ndarray] = {}
    found: dict[int, tuple[tuple[int, int], BadRowReason, str]] = {}
    for out, column, parse in parsers:
        values[out], problems = parse(column, fields[position[column]::width])
        for k, (reason, detail) in problems.items():
            rank = (_PRIORITY[reason], position[column])
            if k not in found or rank < found[k][0]:
                found[k] = (rank, reason, detail)
    typed = {name: values[name] for name in REQUIRED}
    # float64 up to here: the click is decided on the value as written, not its float32 rounding.
    typed["label"] = (values["label"] if "label" in values else values["rating"] >= fmt.click_threshold).astype(np.float32)
    if "rating" in values:
        typed["rating"] = values["rating"].astype(np.float32)
    # A given behaviour sequence is the ``history`` column; features keep their names.
    typed.update({"history" if kind == "sequence" else column: values[column] for column, kind in fmt.features})
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
