"""mlsys.data.parsing: every reason with its detail, nothing dropped, MovieLens clean, a brute-force oracle."""

from __future__ import annotations

import pickle
import random
import time
import decimal
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from mlsys.data.movielens import movielens_dir
from mlsys.data.parsing import BAD_COLUMNS, BadRowReason, EventFormat, QuarantineSummary, header_columns, parse_events
from mlsys.errors import MlsysError, TooManyBadRowsError

CSV = EventFormat(header=False)  # user_id,item_id,timestamp,rating
LABELLED = EventFormat(header=False, columns=("user_id", "item_id", "timestamp", "label"))
FOUR_FIELDS = "expected 4 fields (user_id, item_id, timestamp, rating) separated by ','"


def _one_bad(line: str, fmt: EventFormat = CSV) -> tuple[str, str]:
    good, bad = parse_events([line], [7], fmt)
    assert len(good) == 0 and len(bad) == 1, (line, good, bad)
    assert bad.line_number.tolist() == [7] and bad.raw.tolist() == [line]
    return bad.reason.iloc[0], bad.detail.iloc[0]


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        ("1,2,881250949", "wrong_field_count", f"{FOUR_FIELDS}, found 3"),
        ("1,2,881250949,4,9", "wrong_field_count", f"{FOUR_FIELDS}, found 5"),
        ("1", "wrong_field_count", f"{FOUR_FIELDS}, found 1"),
        (",2,881250949,4", "null_key", "user_id is empty"),
        ("1,,881250949,4", "null_key", "item_id is empty"),
        ("1,   ,881250949,4", "null_key", "item_id is empty"),
        ("NULL,2,881250949,4", "null_key", "user_id='NULL' is null"),
        ("1,\\N,881250949,4", "null_key", "item_id='\\\\N' is null"),
        ("1,x1,881250949,4", "unparseable", "item_id='x1' is not an integer"),
        ("1.5,2,881250949,4", "unparseable", "user_id='1.5' is not an integer"),
        ("1,42.0,881250949,4", "unparseable", "item_id='42.0' is not an integer"),
        ("1,1e3,881250949,4", "unparseable", "item_id='1e3' is not an integer"),
        ("\u0663,2,881250949,4", "unparseable", "user_id='\u0663' is not an integer"),  # an Arabic-Indic 3
        ("99999999999999999999,2,881250949,4", "unparseable", "user_id='99999999999999999999' does not fit in a 64-bit integer"),
        ("1,2,abc,4", "unparseable", "timestamp='abc' is not a number"),
        ("1,2,,4", "unparseable", "timestamp is empty"),
        ("1,2,881250949.5,4", "unparseable", "timestamp='881250949.5' is not a whole number"),
        ("1,2,1e999999999,4", "unparseable", "timestamp='1e999999999' does not fit in a 64-bit integer"),
        ("1,2,881250949,abc", "unparseable", "rating='abc' is not a number"),
        ("1,2,881250949,", "unparseable", "rating is empty"),
        ("1,2,881250949,4_0", "unparseable", "rating='4_0' is not a number"),
        ("1,2,881250949,4,", "wrong_field_count", f"{FOUR_FIELDS}, found 5"),
        ("-1,2,881250949,4", "wrong_type", "user_id='-1' is negative"),
        ("1,2,0,4", "wrong_type", "timestamp='0' is not positive"),
        ("1,2,-881250949,4", "wrong_type", "timestamp='-881250949' is not positive"),
        ("1,2,0.0,4", "wrong_type", "timestamp='0.0' is not positive"),
        ("1,2,881250949,nan", "wrong_type", "rating='nan' is not finite"),
        ("1,2,881250949,-Infinity", "wrong_type", "rating='-Infinity' is not finite"),
        ("1,2,881250949,1e39", "wrong_type", "rating='1e39' is out of float32 range"),
    ],
)
def test_each_reason_names_the_field_and_value(line, reason, detail):
    assert _one_bad(line) == (reason, detail)


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        ("1,2,881250949,2", "wrong_type", "label='2' is not 0 or 1"),
        ("1,2,881250949,0.5", "wrong_type", "label='0.5' is not 0 or 1"),
        ("1,2,881250949,-1", "wrong_type", "label='-1' is not 0 or 1"),
        ("1,2,881250949,nan", "wrong_type", "label='nan' is not 0 or 1"),
        ("1,2,881250949,yes", "unparseable", "label='yes' is not a number"),
        ("1,2,881250949,", "unparseable", "label is empty"),
    ],
)
def test_label_must_be_zero_or_one(line, reason, detail):
    assert _one_bad(line, LABELLED) == (reason, detail)


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        (",x,abc,nan", "null_key", "user_id is empty"),  # null_key before unparseable before wrong_type
        ("1,2,0,abc", "unparseable", "rating='abc' is not a number"),
        ("x,y,abc,4", "unparseable", "user_id='x' is not an integer"),  # then the first field
        ("-1,-2,0,4", "wrong_type", "user_id='-1' is negative"),
    ],
)
def test_a_row_with_several_problems_gets_the_most_basic_one(line, reason, detail):
    assert _one_bad(line) == (reason, detail)


def test_good_rows_are_typed_stripped_and_labelled_by_threshold():
    lines = ["1,10,881250949,4", " 2 ,\t20 , 881250950.0 ,3.5\r", "3,30,8.8125e8,5.0", "4,40,881250951,3.99", "+5,0050,881250952,4.0"]
    good, bad = parse_events(lines, None, CSV)
    assert bad.empty and list(bad.columns) == ["line_number", "raw", "reason", "detail"] == list(BAD_COLUMNS)
    assert list(good.columns) == ["user_id", "item_id", "timestamp", "label", "rating"]
    assert good.dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float32", "float32"]
    assert good.user_id.tolist() == [1, 2, 3, 4, 5]
    assert good.item_id.tolist() == [10, 20, 30, 40, 50]
    assert good.timestamp.tolist() == [881250949, 881250950, 881250000, 881250951, 881250952]
    assert good.rating.tolist() == pytest.approx([4.0, 3.5, 5.0, 3.99, 4.0])
    assert good.label.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    lenient, _ = parse_events(lines, None, EventFormat(header=False, click_threshold=3.5))
    assert lenient.label.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_label_column_gives_the_label_and_no_rating():
    good, bad = parse_events(["1,2,881250949,1", "1,3,881250950,0", "1,4,881250951,1.0"], None, LABELLED)
    assert bad.empty
    assert list(good.columns) == ["user_id", "item_id", "timestamp", "label"]
    assert good.label.dtype == np.float32 and good.label.tolist() == [1.0, 0.0, 1.0]
    both = EventFormat(header=False, columns=("user_id", "item_id", "timestamp", "rating", "label"))
    good, _ = parse_events(["1,2,881250949,5,0", "1,3,881250950,1,1"], None, both)
    assert good.label.tolist() == [0.0, 1.0] and good.rating.tolist() == [5.0, 1.0]


def test_other_columns_are_counted_but_not_parsed():
    fmt = EventFormat(header=False, columns=("user_id", "session", "item_id", "timestamp", "rating"))
    good, bad = parse_events(["1,anything,2,881250949,4", "1,2,881250949,4"], [1, 2], fmt)
    assert good[["user_id", "item_id"]].values.tolist() == [[1, 2]]
    assert bad.reason.tolist() == ["wrong_field_count"]


def test_line_numbers_are_carried_through_and_unknown_is_minus_one():
    lines = ["1,2,881250949,4", "x,2,881250949,4", "1,2,3", "", "4,5,881250949,4", "1,2,881250949,nan"]
    _, bad = parse_events(lines, [101, 102, 103, 104, 105, 106], CSV)
    assert bad.line_number.tolist() == [102, 103, 106]
    assert bad.line_number.dtype == np.int64
    assert bad.raw.tolist() == ["x,2,881250949,4", "1,2,3", "1,2,881250949,nan"]
    _, unknown = parse_events(lines, None, CSV)
    assert unknown.line_number.tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="6 lines but 2 line numbers"):
        parse_events(lines, [1, 2], CSV)


def test_blank_lines_are_skipped_not_bad():
    good, bad = parse_events(["", "   ", "\t", "\r", "1,2,881250949,4", ""], None, CSV)
    assert len(good) == 1 and bad.empty
    good, bad = parse_events([], None, CSV)
    assert good.empty and bad.empty and list(good.columns) == ["user_id", "item_id", "timestamp", "label", "rating"]
    assert good.user_id.dtype == np.int64 and bad.line_number.dtype == np.int64


def test_header_is_line_one_when_numbers_are_known():
    fmt = EventFormat(delimiter="\t", columns=("user_id", "item_id", "rating", "timestamp"))
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float", "1\t2\t4\t881250949"]
    good, bad = parse_events(lines, [1, 2], fmt)
    assert len(good) == 1 and bad.empty
    # Only line 1 is the header: the same text further down is a bad row, never dropped.
    good, bad = parse_events(lines, [2, 3], fmt)
    assert len(good) == 1 and bad.reason.tolist() == ["unparseable"] and bad.line_number.tolist() == [2]
    assert bad.detail.tolist() == ["user_id='user_id:token' is not an integer"]


def test_header_that_does_not_match_the_format_is_refused():
    with pytest.raises(ValueError, match=r"names the columns \('user_id', 'item_id', 'rating', 'timestamp'\).*header_columns"):
        parse_events(["user_id:token,item_id:token,rating:float,timestamp:float", "1,2,4,881250949"], [1, 2], EventFormat())


def test_header_without_line_numbers_is_found_by_its_names():
    lines = ["user_id,item_id,timestamp,rating", "1,2,881250949,4"]
    good, bad = parse_events(lines, None, EventFormat())
    assert len(good) == 1 and bad.empty
    good, bad = parse_events(lines, None, CSV)  # no header in this format: it is a bad row
    assert len(good) == 1 and bad.detail.tolist() == ["user_id='user_id' is not an integer"]


def test_header_columns_strips_types_whitespace_and_bom():
    assert header_columns("\ufeffuser_id:token\titem_id:token\trating:float\ttimestamp:float\n", "\t") == (
        "user_id",
        "item_id",
        "rating",
        "timestamp",
    )
    assert header_columns(" user_id , item_id ,timestamp,label\r", ",") == ("user_id", "item_id", "timestamp", "label")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(columns=("user_id", "item_id", "rating")), "lacks timestamp"),
        (dict(columns=("user_id", "item_id", "timestamp")), "lacks rating or label"),
        (dict(columns=("user_id", "item_id", "timestamp", "rating", "rating")), "names a column twice"),
        (dict(delimiter=""), "non-empty"),
        (dict(click_threshold=float("nan")), "must be finite"),
    ],
)
def test_event_format_checks_itself(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EventFormat(**kwargs)


def test_event_format_accepts_a_list_of_columns():
    fmt = EventFormat(columns=["user_id", "item_id", "timestamp", "rating"])
    assert fmt.columns == ("user_id", "item_id", "timestamp", "rating") and hash(fmt)


def _movielens_lines() -> list[str]:
    return (movielens_dir() / "ml-100k.inter").read_text().splitlines()


def test_movielens_parses_without_a_bad_row():
    path = movielens_dir() / "ml-100k.inter"
    lines = _movielens_lines()
    fmt = EventFormat(delimiter="\t", columns=header_columns(lines[0], "\t"))
    assert fmt.columns == ("user_id", "item_id", "rating", "timestamp")
    good, bad = parse_events(lines, list(range(1, len(lines) + 1)), fmt)
    assert bad.empty and len(good) == 100_000
    expected = pd.read_csv(path, sep="\t")
    expected.columns = ["user_id", "item_id", "rating", "timestamp"]
    clicks = expected.rating >= 4
    assert good.label.astype(np.float64).mean() == clicks.mean()  # float64: a float32 mean rounds
    assert (good.label.to_numpy() == clicks.to_numpy()).all()
    assert (good.user_id.to_numpy() == expected.user_id.to_numpy()).all()
    assert (good.item_id.to_numpy() == expected.item_id.to_numpy()).all()
    assert (good.timestamp.to_numpy() == expected.timestamp.to_numpy()).all()
    assert (good.rating.to_numpy() == expected.rating.to_numpy(dtype=np.float32)).all()


def test_movielens_in_blocks_equals_the_whole():
    """A pure function of a batch: blocks with their line numbers, or none, give the same events."""
    lines = _movielens_lines()
    fmt = EventFormat(delimiter="\t", columns=header_columns(lines[0], "\t"))
    whole, _ = parse_events(lines, None, fmt)
    numbers = list(range(1, len(lines) + 1))
    blocks = [parse_events(lines[i : i + 7_000], numbers[i : i + 7_000], fmt) for i in range(0, len(lines), 7_000)]
    assert all(bad.empty for _, bad in blocks)
    pd.testing.assert_frame_equal(pd.concat([g for g, _ in blocks], ignore_index=True), whole)


def test_movielens_parses_in_well_under_a_second():
    lines = _movielens_lines()
    fmt = EventFormat(delimiter="\t", columns=header_columns(lines[0], "\t"))
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        parse_events(lines, None, fmt)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, f"100k lines took {best:.2f}s"


def test_mixed_file_keeps_every_line_as_good_or_bad():
    rng = random.Random(0)
    corrupt = ["x,2,881250949,4", "1,2,3", ",2,881250949,4", "1,2,0,4", "1,2,881250949,inf", "1,2,881250949,4,4", "1;2;881250949;4"]
    lines, expected_good, expected_bad = ["user_id,item_id,timestamp,rating"], [], []
    for number in range(2, 5_002):
        if rng.random() < 0.1:
            lines.append(rng.choice(corrupt))
            expected_bad.append(number)
        else:
            row = (rng.randrange(1, 1000), rng.randrange(1, 2000), rng.randrange(1, 2**31), rng.choice([1, 2, 3, 4, 5]))
            lines.append(",".join(map(str, row)))
            expected_good.append(row)
    lines.append("")  # the trailing newline
    good, bad = parse_events(lines, list(range(1, len(lines) + 1)), EventFormat())
    assert len(good) + len(bad) == len(lines) - 2  # all but the header and the blank line
    assert bad.line_number.tolist() == expected_bad
    assert good[["user_id", "item_id", "timestamp", "rating"]].values.tolist() == [list(r) for r in expected_good]
    assert set(bad.reason) <= {r.value for r in BadRowReason}


# A brute-force oracle: one line at a time, with Decimal where the module uses regexes and bulk paths.
NULLS = {"", "null", "none", "nan", "na", "n/a", "\\n"}


def _number(v: str) -> Decimal | None:
    if not v.isascii() or "_" in v or v != v.strip():
        return None
    context = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])
    d = context.create_decimal(v)  # exact, and any exponent: overflow is Infinity, underflow flagged
    if context.flags[decimal.InvalidOperation] or (d.is_nan() and v.lower().lstrip("+-") != "nan"):  # sNaN, NaN payloads
        return None
    if context.flags[decimal.Underflow] and not d.is_zero() or context.flags[decimal.Subnormal]:
        return Decimal("1e-999")  # tiny but not zero
    return d


def _oracle_field(name: str, v: str, threshold: float):
    """-> (value, None) or (None, reason)."""
    d = _number(v)
    if name in ("user_id", "item_id"):
        if v.lower() in NULLS:
            return None, "null_key"
        if d is None or not set(v) <= set("+-0123456789") or not -(2**63) <= int(d) < 2**63:
            return None, "unparseable"
        return (int(d), None) if d >= 0 else (None, "wrong_type")
    if name == "timestamp":
        if d is None or not d.is_finite() or d != d.to_integral_value():
            return None, "unparseable"
        if d.adjusted() > 18 and not d.is_zero() or not -(2**63) <= int(d) < 2**63:
            return None, "unparseable"
        return (int(d), None) if d > 0 else (None, "wrong_type")
    if d is None:
        return None, "unparseable"
    if not d.is_finite() or abs(float(d)) > float(np.finfo(np.float32).max):
        return None, "wrong_type"
    if name == "label" and float(d) not in (0.0, 1.0):
        return None, "wrong_type"
    return float(d), None


def _oracle(line: str, fmt: EventFormat):
    """None (skipped), ("bad", reason, field) or ("good", {column: value})."""
    if not line.strip():
        return None
    parts = line.split(fmt.delimiter)
    if len(parts) != len(fmt.columns):
        return "bad", "wrong_field_count", None
    values, problems = {}, []
    for position, (name, raw) in enumerate(zip(fmt.columns, parts)):
        value, reason = _oracle_field(name, raw.strip(), fmt.click_threshold)
        if reason:
            problems.append((["null_key", "unparseable", "wrong_type"].index(reason), position, reason, name))
        values[name] = value
    if problems:
        return ("bad",) + min(problems)[2:]
    if "label" not in values:
        values["label"] = float(values["rating"] >= fmt.click_threshold)
    return "good", values


def _mutate(line: str, rng: random.Random) -> str:
    tokens = ["", " ", "nan", "inf", "-1", "0", "1.5", "42.0", "1e3", "x", "99999999999999999999", " 7 ", "4.0", "+3", "\u0663", "NULL", "1e39", "0.0"]
    tokens += ["1e99999999999999999999", "1e-99999999999999999999", "0e-99999999999999999999", "9223372036854775808", "-9223372036854775808", ".", "1.", ".5e1"]
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.4:
            fields = line.split(",")
            fields[rng.randrange(len(fields))] = rng.choice(tokens)
            line = ",".join(fields)
        elif op < 0.7 and line:
            i = rng.randrange(len(line))
            line = line[:i] + rng.choice("0123456789.-+eE ,x") + line[i + 1 :]
        elif op < 0.85:
            i = rng.randrange(len(line) + 1)
            line = line[:i] + rng.choice("0123456789.-+e ,") + line[i:]
        elif line:
            i = rng.randrange(len(line))
            line = line[:i] + line[i + 1 :]
    return line


@pytest.mark.parametrize("fmt", [CSV, LABELLED], ids=["rating", "label"])
@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_a_line_by_line_oracle(fmt, seed):
    rng = random.Random(seed)
    last = "label" in fmt.columns
    lines = []
    for _ in range(3_000):
        line = f"{rng.randrange(1, 500)},{rng.randrange(1, 900)},{rng.randrange(1, 2**31)},{rng.choice([0, 1]) if last else rng.choice(['1', '3', '4', '4.5', '5'])}"
        lines.append(_mutate(line, rng) if rng.random() < 0.5 else line)
    good, bad = parse_events(lines, list(range(10, 10 + len(lines))), fmt)
    expected = [(number, _oracle(line, fmt)) for number, line in zip(range(10, 10 + len(lines)), lines)]
    expected_bad = [(n, o[1]) for n, o in expected if o and o[0] == "bad"]
    assert list(zip(bad.line_number, bad.reason)) == expected_bad
    fields = [o[2] for _, o in expected if o and o[0] == "bad" and o[2]]
    named = [d for d, r in zip(bad.detail, bad.reason) if r != "wrong_field_count"]
    assert [d.split("=")[0].split(" ")[0] for d in named] == fields
    rows = pd.DataFrame([o[1] for _, o in expected if o and o[0] == "good"])
    assert len(good) == len(rows) and len(good) + len(bad) == sum(1 for line in lines if line.strip())
    for column in good.columns:
        np.testing.assert_array_equal(good[column].to_numpy(), rows[column].to_numpy(dtype=good[column].dtype))


def test_quarantine_summary_counts_and_merges():
    _, bad = parse_events(["x,2,881250949,4", "1,2,3", "y,2,881250949,4", "1,2,881250949,4"], None, CSV)
    first = QuarantineSummary.of(good_rows=1, bad=bad)
    assert first == QuarantineSummary(rows=4, bad=3, by_reason={"unparseable": 2, "wrong_field_count": 1})
    assert list(first.by_reason) == ["unparseable", "wrong_field_count"]  # most frequent first
    assert first.bad_fraction == 0.75
    clean = QuarantineSummary.of(good_rows=6, bad=parse_events([], None, CSV)[1])
    assert clean == QuarantineSummary(rows=6, bad=0, by_reason={}) and clean.bad_fraction == 0.0
    assert QuarantineSummary(rows=0, bad=0, by_reason={}).bad_fraction == 0.0
    _, more = parse_events([",2,881250949,4", "1,,881250949,4", "1,2,881250949,nan"], None, CSV)
    merged = first.merge(clean).merge(QuarantineSummary.of(0, more))
    assert merged == QuarantineSummary(rows=13, bad=6, by_reason={"null_key": 2, "unparseable": 2, "wrong_field_count": 1, "wrong_type": 1})
    assert merged.bad_fraction == pytest.approx(6 / 13)
    assert first.by_reason == {"unparseable": 2, "wrong_field_count": 1}  # merge made a new summary


def test_too_many_bad_rows_error_says_what_and_where_and_pickles():
    error = TooManyBadRowsError(
        "data/clicks.csv", bad=1250, rows=10000, max_fraction=0.01, by_reason={"null_key": 250, "unparseable": 1000}, quarantine=".mlsys/quarantine/ingest"
    )
    assert str(error) == (
        "12.5% of the rows of 'data/clicks.csv' are malformed (1250 of 10000: unparseable 1000, null_key 250), "
        "above data.max_bad_fraction=0.01. The rows and their reasons are in .mlsys/quarantine/ingest; "
        "fix the source or raise data.max_bad_fraction."
    )
    assert isinstance(error, MlsysError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TooManyBadRowsError and str(copy) == str(error)
    assert (copy.source, copy.bad, copy.rows, copy.by_reason) == ("data/clicks.csv", 1250, 10000, {"null_key": 250, "unparseable": 1000})


def test_too_many_bad_rows_error_keeps_small_fractions_readable():
    error = TooManyBadRowsError("s", bad=3, rows=20000, max_fraction=0.0001, by_reason={"wrong_type": 3}, quarantine="q")
    assert str(error).startswith("0.015% of the rows of 's' are malformed (3 of 20000: wrong_type 3), above data.max_bad_fraction=0.0001.")


# -- a declared schema: own column names, event features of every kind --------------------

OWN = EventFormat(header=False, columns=("sku", "uid", "ts", "clicked", "device", "price", "tags"),
                  roles=(("user_id", "uid"), ("item_id", "sku"), ("timestamp", "ts"), ("label", "clicked")),
                  features=(("device", "categorical"), ("price", "numeric"), ("tags", "multi_hot")), separator="|")


def test_roles_are_renamed_and_features_parsed_by_kind():
    good, bad = parse_events(["10,1,100,1,ios,9.5,sale|new", "11,2,200,0, NULL ,,", "12,3,300,0,web,null, eco |  | kids"], None, OWN)
    assert len(bad) == 0
    assert list(good.columns) == ["user_id", "item_id", "timestamp", "label", "device", "price", "tags"]
    assert good.user_id.tolist() == [1, 2, 3] and good.item_id.tolist() == [10, 11, 12] and good.label.tolist() == [1.0, 0.0, 0.0]
    assert good.device.tolist() == ["ios", None, "web"]  # a null marker is a missing value
    assert good.price.dtype == np.float32 and good.price.iloc[0] == np.float32(9.5) and good.price.iloc[1:].isna().all()
    assert good.tags.tolist() == [["sale", "new"], [], ["eco", "kids"]]


@pytest.mark.parametrize("price, reason, detail", [
    ("cheap", BadRowReason.unparseable, "price='cheap' is not a number"),
    ("inf", BadRowReason.wrong_type, "price='inf' is not finite"),
    ("1e39", BadRowReason.wrong_type, "price='1e39' is out of float32 range"),
])
def test_a_numeric_feature_of_the_wrong_kind_is_a_bad_row_naming_its_column(price, reason, detail):
    assert _one_bad(f"10,1,100,1,ios,{price},sale", OWN) == (reason.value, detail)


def test_bad_keys_are_named_by_the_files_own_columns():
    assert _one_bad("x,1,100,1,ios,1,", OWN) == ("unparseable", "sku='x' is not an integer")
    assert _one_bad("10,1,100,2,ios,1,", OWN) == ("wrong_type", "clicked='2' is not 0 or 1")
    assert _one_bad("10,1,-4,1,ios,1,", OWN) == ("wrong_type", "ts='-4' is not positive")


def test_a_format_names_the_declared_columns_the_file_lacks():
    with pytest.raises(ValueError, match="lacks uid, price"):
        EventFormat(columns=("sku", "ts", "clicked"), roles=(("user_id", "uid"), ("item_id", "sku"), ("timestamp", "ts"), ("label", "clicked")),
                    features=(("price", "numeric"),))


def test_a_given_behaviour_sequence_is_parsed_into_history():
    fmt = EventFormat(header=False, columns=("uid", "sku", "ts", "clicked", "prev"),
                      roles=(("user_id", "uid"), ("item_id", "sku"), ("timestamp", "ts"), ("label", "clicked")),
                      features=(("prev", "sequence"),), separator=";")
    good, bad = parse_events(["1,10,100,1,3;4; 5", "1,11,200,0,", "2,12,300,1,7;x"], [2, 3, 4], fmt)
    assert good.history.tolist() == [[3, 4, 5], []] and "prev" not in good.columns
    assert bad.reason.tolist() == ["unparseable"] and bad.detail.tolist() == ["prev='7;x' holds 'x', not an item id"]
