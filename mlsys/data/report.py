"""Data reports a person reads: a self-contained HTML page and a terminal table (no Ray).

The HTML page works like Facets Overview: one section per feature comparing
the sides (train vs eval, span 2 vs span 1) in a table and a plotly chart,
with the anomalies listed first and linked to their features. plotly.js is
embedded once, so the file opens offline.

    write_html("report.html", [("train", train), ("eval", eval_)], [report])
    print(format_table(train, eval_))
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from mlsys.data.anomalies import Anomaly, AnomalyReport, Severity
from mlsys.data.statistics import QUANTILES, DatasetStatistics, FeatureKind, FeatureStatistics
from mlsys.errors import MissingDependencyError

MAX_CATEGORIES = 20
CHART_HEIGHT = 300

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin:0 0 8px} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.sides td{text-align:left} .anomalies{list-style:none;padding:0}
.anomalies li{padding:4px 8px;margin:2px 0;border-left:5px solid}
li.error{background:#fdecea;border-color:#d32f2f;color:#8b1a1a}
li.warning{background:#fff4e0;border-color:#f0a500;color:#7a5200}
.feature{border-top:1px solid #ccc;padding-top:8px;margin-top:16px}
.feature h2{font-size:18px;margin:4px 0} .kind{color:#777;font-weight:normal;font-size:14px}
.feature.flagged h2{background:#fff4e0;padding:2px 6px} .feature.flagged.has-error h2{background:#fdecea}
.badge{font-size:12px;padding:1px 6px;border-radius:8px;color:#fff;margin-left:8px;vertical-align:middle}
.badge.error{background:#d32f2f} .badge.warning{background:#f0a500}
.body{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.chart{flex:1;min-width:420px;height:%dpx}
""" % CHART_HEIGHT


def _num(x: float | None, compact: bool = False) -> str:
    """Short human number: 38.6, 37, 189664, 1.23e+09, 0.0123; ``compact``: 190k, 1.49M."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if compact and abs(x) >= 1e4 and not (x == int(x) and abs(x) < 1e6):
        return f"{x / 1e6:.3g}M" if abs(x) >= 1e6 else f"{x / 1e3:.3g}k"
    if x == int(x) and abs(x) < 1e7:
        return str(int(x))
    if abs(x) >= 1e7 or abs(x) < 0.01:
        return f"{x:.3g}"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _date(seconds: float | None) -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


def _anchor(name: str) -> str:
    """An id for a feature: reversible escaping, so distinct names never share an anchor."""
    return "feature-" + re.sub(r"[^A-Za-z0-9.-]", lambda m: f"_{ord(m.group()):x}_", name)


def _shares(f: FeatureStatistics) -> dict[str, float]:
    """Value -> share of present values, from the frequent-items sketch (falls back to ``top``)."""
    counts = {str(v): float(c) for v, c in (f.top or [])}
    counts.update(f.frequencies())
    return {v: c / f.present for v, c in counts.items()} if f.present else {}


def _categories(feats: list[FeatureStatistics]) -> list[str]:
    """Union of the sides' top values, most shared first, at most MAX_CATEGORIES."""
    best: dict[str, float] = {}
    for f in feats:
        for v, c in (f.top or []):
            best[str(v)] = max(best.get(str(v), 0.0), c / f.present if f.present else 0.0)
    return sorted(best, key=lambda v: (-best[v], v))[:MAX_CATEGORIES]


# -- rows of the comparison table ------------------------------------------------


def _rows(kind: FeatureKind, feats: list[FeatureStatistics | None], rows: list[int]) -> list[tuple[str, list[str]]]:
    def row(label, fn):
        return label, [fn(f, n) if f is not None else "absent" for f, n in zip(feats, rows)]

    out = [row("count", lambda f, n: f"{f.count:,}"), row("missing", lambda f, n: _pct(f.missing, f.count))]
    if len({f.kind for f in feats if f is not None}) > 1:  # a wrong_type anomaly: show what each side has
        out.insert(0, row("kind", lambda f, n: f.kind.value))
    if kind is FeatureKind.numeric:
        out += [row(k, lambda f, n, k=k: _num(getattr(f, k))) for k in ("min", "max", "mean", "std")]
        out.append(row("zeros", lambda f, n: _pct(f.zeros or 0, f.present)))
        out += [row(q, lambda f, n, q=q: _num((f.quantiles or {}).get(q))) for q in QUANTILES]
    elif kind is FeatureKind.categorical:
        out.append(row("distinct (est.)", lambda f, n: f"~{_num(round(f.distinct or 0))}"))
        for i in range(5):
            out.append(row(f"top {i + 1}", lambda f, n, i=i: (
                f"{html.escape(str(f.top[i][0]))} ({_pct(f.top[i][1], f.present)})" if f.top and len(f.top) > i else "")))
    elif kind is FeatureKind.list:
        out += [row(f"length {k}", lambda f, n, k=k: _num((f.length or {}).get(k))) for k in ("min", "max", "mean")]
        out += [row(f"length {q}", lambda f, n, q=q: _num(((f.length or {}).get("quantiles") or {}).get(q))) for q in ("p50", "p95")]
    elif kind is FeatureKind.timestamp:
        out.append(row("range", lambda f, n: f"{_date(f.min)} .. {_date(f.max)}"))
    return out


def _table(names: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f"<tr><td>{label}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>" for label, cells in rows)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


# -- charts --------------------------------------------------------------------


def _bars(go, hist: dict, rows: int, name: str):
    edges, counts = hist["edges"], hist["counts"]
    if len(edges) == 2 and edges[0] == edges[1]:  # a constant: one bar of visible width
        edges = [edges[0] - 0.5, edges[0] + 0.5]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    return go.Bar(x=centers, y=[c / rows if rows else 0 for c in counts], width=widths, name=name, opacity=0.6)


def _figure(go, kind: FeatureKind, names: list[str], feats: list[FeatureStatistics | None], rows: list[int]):
    fig = go.Figure()
    present = [(html.escape(n), f, r) for n, f, r in zip(names, feats, rows) if f is not None]
    if kind is FeatureKind.numeric:
        for n, f, r in present:
            if f.histogram:
                fig.add_trace(_bars(go, f.histogram, r, n))
        fig.update_layout(barmode="overlay", yaxis_title="fraction of rows")
    elif kind is FeatureKind.list:
        for n, f, r in present:
            if f.length and f.length.get("histogram"):
                fig.add_trace(_bars(go, f.length["histogram"], r, n))
        fig.update_layout(barmode="overlay", xaxis_title="length", yaxis_title="fraction of rows")
    elif kind is FeatureKind.categorical:
        cats = _categories([f for _, f, _ in present])
        for n, f, _ in present:
            shares = _shares(f)
            fig.add_trace(go.Bar(x=[html.escape(c) for c in cats], y=[shares.get(c, 0.0) for c in cats], name=n))
        fig.update_layout(barmode="group", yaxis_title="share of values", xaxis_type="category")
    else:  # timestamp: only the range is known
        for n, f, _ in present:
            if f.min is not None:
                # naive UTC: plotly.js date axes do not take a "+00:00" suffix
                ends = [datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) for t in (f.min, f.max)]
                fig.add_trace(go.Scatter(x=ends, y=[n, n], mode="lines+markers", name=n, line_width=8))
        fig.update_layout(yaxis_type="category")
    fig.update_layout(template="plotly_white", height=CHART_HEIGHT, margin=dict(l=50, r=10, t=10, b=40),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig


# -- the page ------------------------------------------------------------------


def _anomaly_item(a: Anomaly, report: str, linked: set[str]) -> str:
    feature = html.escape(a.feature)
    if a.feature in linked:
        feature = f'<a href="#{_anchor(a.feature)}">{feature}</a>'
    where = f"[{html.escape(report)}] " if report else ""
    return (f'<li class="{a.severity.value}"><b>{a.severity.value}</b> {where}{feature}: '
            f"{html.escape(a.measure)} = {a.value:.4g} (threshold {a.threshold:.4g}) &mdash; {html.escape(a.message)}</li>")


def render_html(sides: list[tuple[str, DatasetStatistics]], anomalies: list[AnomalyReport] = (), title: str = "Data report") -> str:
    """A self-contained HTML page comparing ``sides`` feature by feature.

    ``render_html([("train", train), ("eval", eval_)], [report])``: errors red, warnings amber, on top.
    """
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError as e:
        raise MissingDependencyError("The HTML data report", "plotly") from e
    names = [n for n, _ in sides]
    rows = [s.rows for _, s in sides]
    features = list(dict.fromkeys(f for _, s in sides for f in s.features))
    flagged: dict[str, list[Anomaly]] = {}
    for report in anomalies:
        for a in report.anomalies:
            flagged.setdefault(a.feature, []).append(a)
    features.sort(key=lambda f: (f not in flagged, f))

    items = [_anomaly_item(a, r.name, set(features)) for r in anomalies
             for a in sorted(r.anomalies, key=lambda a: (a.severity is not Severity.error, a.feature))]
    n_err = sum(len(r.errors) for r in anomalies)
    n_warn = sum(len(r.warnings) for r in anomalies)
    summary = "".join(f"<tr><td>{html.escape(n)}</td><td>{s.rows:,}</td><td>{len(s.features)}</td></tr>" for n, s in sides)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="sides"><tr><th>side</th><th>rows</th><th>features</th></tr>{summary}</table>',
        f"<h2>Anomalies: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}</h2>",
        f'<ul class="anomalies">{"".join(items)}</ul>' if items else "<p>No anomalies.</p>",
    ]
    for name in features:
        feats = [s.features.get(name) for _, s in sides]
        kind = next(f.kind for f in feats if f is not None)
        found = flagged.get(name, [])
        worst = "error" if any(a.severity is Severity.error for a in found) else "warning"
        badge = f'<span class="badge {worst}">{len(found)} anomal{"y" if len(found) == 1 else "ies"}</span>' if found else ""
        css = f"feature flagged{' has-error' if worst == 'error' else ''}" if found else "feature"
        chart = _figure(go, kind, names, feats, rows).to_html(
            full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
        parts.append(
            f'<section class="{css}" id="{_anchor(name)}"><h2>{html.escape(name)} <span class="kind">{kind.value}</span>{badge}</h2>'
            f'<div class="body">{_table(names, _rows(kind, feats, rows))}<div class="chart">{chart}</div></div></section>'
        )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>\n"
        + "\n".join(parts) + "\n</body></html>\n"
    )


def write_html(path: str | Path, sides: list[tuple[str, DatasetStatistics]], anomalies: list[AnomalyReport] = (),
               title: str = "Data report") -> Path:
    """``write_html("report.html", [("train", train)])`` writes the page (utf-8, any artifact URI) and returns its path."""
    from mlsys import storage

    storage.write_text(str(path), render_html(sides, anomalies, title))
    return Path(path)


# -- terminal ------------------------------------------------------------------


def _summary(f: FeatureStatistics) -> str:
    if f.kind is FeatureKind.numeric:
        if f.mean is None:
            return "no values"
        n = [_num(x, compact=True) for x in (f.mean, f.std, f.quantiles["p50"], f.min, f.max)]
        return f"mean {n[0]} std {n[1]} p50 {n[2]} [{n[3]}, {n[4]}]"
    if f.kind is FeatureKind.categorical:
        top = f", top {f.top[0][0]} {_pct(f.top[0][1], f.present)}" if f.top else ""
        return f"distinct ~{_num(round(f.distinct or 0), compact=True)}{top}"
    if f.kind is FeatureKind.list:
        return f"len mean {_num(f.length['mean'])} p95 {_num(f.length['quantiles']['p95'])}" if f.length else "no values"
    return f"{_date(f.min)} .. {_date(f.max)}" if f.min is not None else "no values"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_table(stats: DatasetStatistics, other: DatasetStatistics | None = None, width: int = 100) -> str:
    """One line per feature (two with ``other``), each at most ``width`` characters.

    ``print(format_table(train, eval_))`` ->
    ``age  numeric  24,421  0.0%  train: mean 38.6 std 13.7 p50 37 [17, 90]``
    """
    names = list(dict.fromkeys([*stats.features, *(other.features if other else ())]))
    name_w = min(max([7, *map(len, names)]), max(12, width // 4))
    sides = [s for s in (stats, other) if s is not None]
    count_w = max([5, *(len(f"{f.count:,}") for s in sides for f in s.features.values())])
    label = (stats.name or "this", other.name or "other") if other else (None, None)

    def line(name: str, kind: str, cells: list[str]) -> str:
        text = f"{_fit(name, name_w):<{name_w}}  {kind:<11}  {cells[0]:>{count_w}}  {cells[1]:>7}  {cells[2]}"
        return _fit(text.rstrip(), width)

    def cells(f: FeatureStatistics | None, side: str | None) -> list[str]:
        prefix = f"{side}: " if side else ""
        return ["", "", prefix + "absent"] if f is None else [f"{f.count:,}", _pct(f.missing, f.count), prefix + _summary(f)]

    out = [line("feature", "kind", ["count", "missing", "summary"])]
    for name in names:
        mine, theirs = stats.features.get(name), (other.features.get(name) if other else None)
        out.append(line(name, (mine or theirs).kind.value, cells(mine, label[0])))
        if other is not None:
            out.append(line("", "", cells(theirs, label[1])))
    return "\n".join(out)
