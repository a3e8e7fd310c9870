"""The evaluation report a person reads: one self-contained HTML page beside the data report.

The decision and its one-line reason first, then the pre-release estimate, the checks that failed,
the candidate and the champion side by side (value, confidence interval, paired delta, examples per
slice bucket), and per-slice bar charts with the intervals as error bars. plotly.js is embedded
once (as in :mod:`mlsys.data.report`), so the file opens offline.

    write_evaluation_report(evaluation, decision, estimate, "report.html", "Evaluation of ctr version 4")
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from mlsys.data.report import _CSS as DATA_REPORT_CSS  # one look for both reports
from mlsys.errors import MissingDependencyError
from mlsys.evaluate.blessing import BlessingDecision
from mlsys.evaluate.replay import PreReleaseEstimate
from mlsys.evaluate.slices import DELTA, OVERALL, Evaluation, MetricRow

CHART_METRICS = ("auc", "logloss")  # the bootstrapped metrics a gate usually names
CHART_HEIGHT = 340

_CSS = DATA_REPORT_CSS + """
.decision{padding:10px 14px;margin:12px 0;border-left:6px solid;font-size:15px}
.decision.blessed{background:#e8f5e9;border-color:#2e7d32;color:#1b5e20}
.decision.refused{background:#fdecea;border-color:#d32f2f;color:#8b1a1a}
.estimate{padding:6px 14px;margin:8px 0;background:#f4f4f4} .estimate.breach{background:#fff4e0}
td.failed{background:#fdecea} td.ci{color:#777} .chart{min-width:600px}
"""


def _f(x: float, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _decision(decision: BlessingDecision) -> str:
    css = "blessed" if decision.blessed else "refused"
    champion = f"champion: version {html.escape(decision.champion_version)}" if decision.champion_version else "no champion"
    return (f'<div class="decision {css}"><b>{"Blessed" if decision.blessed else "Not blessed"}</b> ({champion}, '
            f"{len(decision.checks)} checks, {len(decision.failed)} failed)<br>{html.escape(decision.reason)}</div>")


def _estimate(estimate: PreReleaseEstimate | None) -> str:
    if estimate is None:
        return '<div class="estimate">Pre-release estimate: no logged requests to replay.</div>'
    breaches = "".join(f"<li>{html.escape(b)}</li>" for b in estimate.breaches)
    rows = [("requests replayed", f"{estimate.requests:,}"), ("rows", f"{estimate.rows:,}"),
            ("served by version", html.escape(estimate.served_version)), ("score PSI", f"{estimate.psi:.4g}"),
            (f"top-{estimate.top_k} overlap", f"{estimate.top_k_overlap:.3f}"),
            ("top item changed", f"{estimate.top_item_changed:.1%} of requests")]
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return (f'<div class="estimate{" breach" if breaches else ""}"><h2>Pre-release estimate</h2>'
            f'<table class="sides">{table}</table>{f"<ul>{breaches}</ul>" if breaches else ""}</div>')


def _checks(decision: BlessingDecision) -> str:
    failed = decision.failed
    items = "".join(f'<li class="error">{html.escape(c.line())}</li>' for c in failed)
    body = f'<ul class="anomalies">{items}</ul>' if items else "<p>Every check passed.</p>"
    return f"<h2>Checks: {len(decision.checks)}, {len(failed)} failed</h2>{body}"


def _side_by_side(evaluation: Evaluation, failed: set[tuple[str, str, str]]) -> str:
    models = [*evaluation.models, *([DELTA] if any(r.model == DELTA for r in evaluation.rows) else [])]
    head = "".join(f"<th>{html.escape(m)}</th><th>CI</th>" for m in models)
    lines = []
    for slice_, bucket in evaluation.buckets:
        where = "overall" if slice_ == OVERALL else f"{slice_}={bucket}"
        for metric in evaluation.metrics:
            cells = []
            for m in models:
                row = evaluation.get(m, metric, slice_, bucket)
                css = ' class="failed"' if m == "candidate" and (metric, slice_, bucket) in failed else ""
                if row is None:
                    cells.append("<td>-</td><td></td>")
                    continue
                ci = "" if math.isnan(row.low) else f"[{_f(row.low, m == DELTA)}, {_f(row.high, m == DELTA)}]"
                cells.append(f'<td{css}>{_f(row.value, m == DELTA)}</td><td class="ci">{ci}</td>')
            lines.append(f"<tr><td>{html.escape(where)}</td><td>{metric}</td>{''.join(cells)}"
                         f"<td>{evaluation.examples(slice_, bucket):,}</td></tr>")
    return (f"<h2>Candidate and champion, side by side</h2><table><tr><th>slice</th><th>metric</th>{head}"
            f"<th>examples</th></tr>{''.join(lines)}</table>")


def _bars(go, evaluation: Evaluation, metric: str) -> str:
    fig = go.Figure()
    for model in evaluation.models:
        rows: list[MetricRow] = [r for r in evaluation.rows if r.model == model and r.metric == metric]
        x = ["overall" if r.slice == OVERALL else f"{r.slice}={r.bucket}" for r in rows]
        error = dict(type="data", symmetric=False, array=[max(r.high - r.value, 0) if not math.isnan(r.high) else 0 for r in rows],
                     arrayminus=[max(r.value - r.low, 0) if not math.isnan(r.low) else 0 for r in rows])
        fig.add_trace(go.Bar(x=[html.escape(v) for v in x], y=[None if math.isnan(r.value) else r.value for r in rows],
                             name=model, error_y=error,
                             customdata=[r.examples for r in rows], hovertemplate="%{x}: %{y:.4f} (%{customdata} examples)"))
    fig.update_layout(barmode="group", template="plotly_white", height=CHART_HEIGHT, yaxis_title=metric,
                      xaxis_type="category", margin=dict(l=50, r=10, t=30, b=120), title=f"{metric} per slice",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    shown = [r for r in evaluation.rows if r.metric == metric and r.model != DELTA and not math.isnan(r.value)]
    if metric == "auc" and shown:  # zoom in: AUCs differ in the second decimal, bars from 0 hide it
        lows = [r.value if math.isnan(r.low) else r.low for r in shown]
        highs = [r.value if math.isnan(r.high) else r.high for r in shown]
        fig.update_yaxes(range=[max(0.0, min(lows) - 0.05), min(1.0, max(highs) + 0.02)])
    return f'<div class="chart">{fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})}</div>'


def render_evaluation_report(evaluation: Evaluation, decision: BlessingDecision, estimate: PreReleaseEstimate | None,
                             title: str = "Evaluation report") -> str:
    """The page as a string (see the module docstring)."""
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError as e:
        raise MissingDependencyError("The HTML evaluation report", "plotly") from e
    failed = {(c.metric, c.slice, c.bucket) for c in decision.checks if not c.passed}
    charts = [_bars(go, evaluation, m) for m in CHART_METRICS if m in evaluation.metrics]
    parts = [f"<h1>{html.escape(title)}</h1>", _decision(decision), _estimate(estimate), _checks(decision),
             _side_by_side(evaluation, failed), "<h2>Per slice</h2>", *charts]
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_evaluation_report(evaluation: Evaluation, decision: BlessingDecision, estimate: PreReleaseEstimate | None,
                            path: str | Path, title: str = "Evaluation report") -> Path:
    """Write the page (utf-8, any artifact URI) and return its path.

    >>> write_evaluation_report(ev, bless(ev, cfg.blessing, "3"), None, "report.html", "Evaluation of ctr v4")  # doctest: +SKIP
    """
    from mlsys import storage

    storage.write_text(str(path), render_evaluation_report(evaluation, decision, estimate, title))
    return Path(path)

