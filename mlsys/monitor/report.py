"""The monitor's report a person reads: one self-contained HTML page of one model's monitor folder (no Ray).

Drawn from the files the monitor writes under ``<monitor dir>/<model>/`` (docs/monitoring.md): drift
and skew per feature over time and the scores' drift (``windows/*/*.report.json``), online quality
against the offline evaluation (``quality/``), the alerts fired and resolved (``alerts.jsonl``,
``alerts.json``), the retraining jobs triggered and their outcome (``retrain.json``) and the
online-learning updates (``online.json``). Every file is optional: a section without its file says
so. A file that does not parse is named on the page, and the rest is drawn without it. plotly.js is
embedded once (as in :mod:`mlsys.data.report`), so the page opens offline; times are UTC.

    write_report(Path(".mlsys/monitor/ctr"), Path("monitor.html"))
    summary(Path(".mlsys/monitor/ctr"))  # {"windows": 12, "judged": 10, "firing": 1, "retrains": 1, ...}
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from mlsys.data.report import _CSS as DATA_REPORT_CSS  # one look for every report
from mlsys.errors import MissingDependencyError
from mlsys.monitor.alerts import Alert, AlertState
from mlsys.monitor.drift import WindowReport
from mlsys.monitor.online import SCORE
from mlsys.monitor.quality import QualityWindow
from mlsys.monitor.retrain import Retrain, RetrainState

CHART_MEASURES = ("linf", "psi")  # categorical and numeric; js is in the window reports, the default rules use these
MAX_ROWS = 50  # rows of a table, newest first; the charts show everything
CHART_HEIGHT = 320
_DASHES = ("solid", "dot", "dash", "longdash", "dashdot")  # one per model version
# plotly's own qualitative colors (plotly.colors.qualitative.Plotly), here so the module imports without plotly
_PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52")
_STATE_COLORS = {"firing": "#d32f2f", "resolved": "#2e7d32", "pending": "#f0a500", "inactive": "#777"}

_CSS = DATA_REPORT_CSS + """
section{border-top:1px solid #ccc;margin-top:20px;padding-top:4px} .summary{font-size:15px;margin:8px 0}
.note{color:#555} .unreadable{background:#fdecea;border-left:5px solid #d32f2f;padding:4px 8px;margin:6px 0}
td.firing{color:#d32f2f;font-weight:bold} td.resolved{color:#2e7d32} td.msg{text-align:left;max-width:640px}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{flex:1;min-width:560px}
"""


@dataclass
class MonitorFolder:
    """What one model's monitor folder holds, read by :func:`read_folder` without raising."""

    root: Path
    reports: list[WindowReport] = field(default_factory=list)  # oldest first
    quality: list[QualityWindow] = field(default_factory=list)  # oldest first
    events: list[tuple[Alert, str]] = field(default_factory=list)  # alerts.jsonl: (transition's alert, previous state)
    alerts: Optional[list[Alert]] = None  # alerts.json: each alert's last state; None: no file
    retrain: Optional[RetrainState] = None
    online: Optional[dict] = None  # {"watermark", "last_update", "history": [update dicts]}
    unreadable: dict[str, str] = field(default_factory=dict)  # path under root -> what is wrong with it

    @property
    def model(self) -> str:
        return self.root.name


def _alert(raw: dict) -> Alert:
    names = {f.name for f in fields(Alert)}
    return Alert(**{k: v for k, v in raw.items() if k in names and k != "state"}, state=AlertState(raw["state"]))


def _retrain(d: dict) -> RetrainState:
    return RetrainState(float(d.get("last_alert_retrain") or 0), float(d.get("schedule_checked") or 0),
                        [Retrain(**r) for r in d["history"]])


def _online(d: dict) -> dict:
    if not isinstance(d.get("history"), list) or not all(isinstance(u, dict) and "at" in u for u in d["history"]):
        raise ValueError("no list of updates under 'history'")
    return d


def _quality(d: dict) -> QualityWindow:
    names = {f.name for f in fields(QualityWindow)}
    return QualityWindow(**{k: v for k, v in d.items() if k in names})


def _parse(folder: MonitorFolder, path: Path, parse: Callable[[Any], Any], text: Optional[str] = None) -> Any:
    """``parse(json)`` of one file, or None with the file named in ``folder.unreadable``."""
    name = path.relative_to(folder.root).as_posix()
    try:
        return parse(json.loads(path.read_text() if text is None else text))
    except Exception as e:  # noqa: BLE001 - whatever is wrong with one file must not stop the page
        folder.unreadable[name] = f"{type(e).__name__}: {e}"
        return None


def read_folder(root: Path) -> MonitorFolder:
    """Every file of ``root`` (``<monitor dir>/<model>``) the report draws; a missing one stays empty."""
    root = Path(root)
    folder = MonitorFolder(root)
    reports = [_parse(folder, p, WindowReport.from_dict) for p in sorted(root.glob("windows/*/*.report.json"))]
    folder.reports = sorted((r for r in reports if r is not None), key=lambda r: (r.start, r.version))
    quality = [_parse(folder, p, _quality) for p in sorted(root.glob("quality/*/*.json"))]
    folder.quality = sorted((q for q in quality if q is not None), key=lambda q: (q.start, q.version))
    events = root / "alerts.jsonl"
    if events.exists():
        for i, line in enumerate(events.read_text().splitlines(), 1):  # a torn last line spoils only itself
            if line.strip():
                event = _parse(folder, events, lambda d: (_alert(d), str(d.get("previous", ""))), line)
                if event is None:
                    folder.unreadable[f"alerts.jsonl line {i}"] = folder.unreadable.pop("alerts.jsonl")
                else:
                    folder.events.append(event)
    if (root / "alerts.json").exists():
        folder.alerts = _parse(folder, root / "alerts.json", lambda d: [_alert(a) for a in d["alerts"]])
    if (root / "retrain.json").exists():
        folder.retrain = _parse(folder, root / "retrain.json", _retrain)
    if (root / "online.json").exists():
        folder.online = _parse(folder, root / "online.json", _online)
    return folder


def _by_version(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)  # "9" before "10"


def counts(folder: MonitorFolder) -> dict[str, Any]:
    updates = folder.online["history"] if folder.online else []
    return {
        "windows": len(folder.reports), "judged": sum(r.judged for r in folder.reports),
        "versions": sorted({r.version for r in folder.reports} | {q.version for q in folder.quality}, key=_by_version),
        "quality_windows": len(folder.quality),
        "fired": sum(a.state is AlertState.firing for a, _ in folder.events),
        "resolved": sum(a.state is AlertState.resolved for a, _ in folder.events),
        "firing": sum(a.state is AlertState.firing for a in folder.alerts or ()),
        "retrains": len(folder.retrain.history) if folder.retrain else 0,
        "online_updates": len(updates), "pushed": sum(bool(u.get("pushed")) for u in updates),
        "unreadable": sorted(folder.unreadable),
    }


def summary(root: Path) -> dict[str, Any]:
    """Counts of what ``root`` holds: ``{"windows": 12, "judged": 10, "versions": ["3", "4"], "firing": 1, ...}``."""
    return counts(read_folder(root))


# -- cells and charts -------------------------------------------------------------------


def _utc(t: Optional[float]) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _x(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)  # naive: plotly.js dates take no "+00:00"


def _f(x: Optional[float], digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)


def _y(x: Optional[float]) -> Optional[float]:
    return x if x is not None and math.isfinite(x) else None  # a gap in the line, not a broken axis


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list[str]], total: Optional[int] = None) -> str:
    """Cells are HTML already (escape what goes in); ``total``: rows there are, when more than shown."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    more = f'<p class="note">the newest {len(rows)} of {total}</p>' if total and total > len(rows) else ""
    return f"<table><tr>{th}</tr>{body}</table>{more}"


def _chart(go, traces: list, title: str, y: str, **layout) -> str:
    fig = go.Figure(traces)
    fig.update_layout(template="plotly_white", height=CHART_HEIGHT, title=title, yaxis_title=y,
                      margin=dict(l=50, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.2), **layout)
    return f'<div class="chart">{fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _unreadable(folder: MonitorFolder, prefix: str) -> str:
    return "".join(f'<div class="unreadable">unreadable: <b>{_e(name)}</b> ({_e(why)}); drawn without it</div>'
                   for name, why in folder.unreadable.items() if name.startswith(prefix))


# -- sections ---------------------------------------------------------------------------


def _distance_traces(go, reports: list[WindowReport], side: str, measure: str, colors: dict[str, str], dashes: dict[str, str]):
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in reports:
        for feature, measures in getattr(r, side).items():
            if feature != SCORE and measure in measures:
                series.setdefault((feature, r.version), []).append((r.start, measures[measure]))
    return [go.Scatter(x=[_x(t) for t, _ in points], y=[_y(v) for _, v in points], mode="lines+markers",
                       name=_e(f"{feature} v{version}"), legendgroup=_e(feature),
                       line=dict(color=colors[feature], dash=dashes[version]))
            for (feature, version), points in sorted(series.items())]


def _largest(r: WindowReport) -> str:
    """``drift linf 0.213 (gender), skew psi 0.031 (age)``: the furthest feature per side and charted measure."""
    parts = []
    for side in ("drift", "skew"):
        for measure in CHART_MEASURES:
            values = [(m[measure], f) for f, m in getattr(r, side).items()
                      if f != SCORE and m.get(measure) is not None and not math.isnan(m[measure])]
            if values:
                value, feature = max(values)
                parts.append(f"{side} {measure} {_f(value, 3)} ({_e(feature)})")
    return ", ".join(parts) or "-"


def _drift(go, folder: MonitorFolder) -> str:
    head = "<h2>Drift and skew per feature</h2>" + _unreadable(folder, "windows/")
    reports = folder.reports
    if not reports:
        return head + _note("No window reports yet: nothing scored has been sketched and merged "
                            "(serve.monitoring.enabled, and a running monitor: mlsys monitor start).")
    per_version = []
    for version in sorted({r.version for r in reports}, key=_by_version):
        mine = [r for r in reports if r.version == version]
        judged = sum(r.judged for r in mine)
        last = next((r for r in reversed(mine) if r.judged), None)
        per_version.append([_e(version), f"{len(mine):,}", f"{judged:,}", f"{len(mine) - judged:,}", _utc(mine[0].start),
                            _utc(mine[-1].end), f"{sum(r.rows for r in mine):,}", _e(mine[-1].baseline or "none: no skew"),
                            f'<td class="msg">{_largest(last) if last else "-"}</td>'])
    out = [head, _table(["version", "windows", "judged", "not judged (under monitor.min_rows)", "first", "last",
                         "rows", "skew baseline", "furthest in its last judged window"], per_version)]
    judged = [r for r in reports if r.judged]
    if not judged:
        return "".join(out) + _note("No window was judged yet: each had fewer rows than monitor.min_rows.")
    features = sorted({f for r in judged for side in (r.drift, r.skew) for f in side if f != SCORE})
    colors = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(features)}
    dashes = {v: _DASHES[i % len(_DASHES)] for i, v in enumerate(sorted({r.version for r in judged}, key=_by_version))}
    what = {"drift": "against the previous window", "skew": "against the version's training statistics"}
    for side in ("drift", "skew"):
        charts = [_chart(go, traces, f"{side} {measure} {what[side]}", measure)
                  for measure in CHART_MEASURES if (traces := _distance_traces(go, judged, side, measure, colors, dashes))]
        out.append(f'<div class="charts">{"".join(charts)}</div>' if charts else
                   _note(f"No {side} distances in the judged windows" + (" (no training statistics in the package)." if side == "skew" else ".")))
    scores = [go.Scatter(x=[_x(r.start) for r in mine], y=[_y(r.drift[SCORE].get("psi")) for r in mine], mode="lines+markers",
                         name=_e(f"v{version}"), line=dict(dash=dashes[version]))
              for version in dashes if (mine := [r for r in judged if r.version == version and SCORE in r.drift])]
    out.append(_chart(go, scores, "prediction drift: the scores' PSI against the previous window", "psi") if scores else
               _note("No prediction drift yet: a version's first judged window has no previous one."))
    return "".join(out)


def _quality_section(go, folder: MonitorFolder) -> str:
    head = "<h2>Online quality against the offline evaluation</h2>" + _unreadable(folder, "quality/")
    windows = folder.quality
    if not windows:
        return head + _note("No online quality yet: no window's labels are in (monitor.quality.enabled, labels through "
                            "POST /v1/events or a label source, and monitor.quality.attribution_s after serving).")
    traces = []
    for i, version in enumerate(sorted({w.version for w in windows}, key=_by_version)):
        mine, color = [w for w in windows if w.version == version], _PALETTE[i % len(_PALETTE)]
        traces.append(go.Scatter(x=[_x(w.start) for w in mine], y=[_y(w.auc) for w in mine], mode="lines+markers",
                                 name=_e(f"v{version} online AUC"), line=dict(color=color)))
        if mine[0].offline.get("auc") is not None:
            traces.append(go.Scatter(x=[_x(mine[0].start), _x(mine[-1].end)], y=[mine[0].offline["auc"]] * 2, mode="lines",
                                     name=_e(f"v{version} offline AUC"), line=dict(color=color, dash="dash")))
    rows = [[_e(w.version), _utc(w.start), f"{w.rows:,}", f"{w.requests:,}", f"{w.clicks:,}", _f(w.ctr), _f(w.auc),
             _f(w.offline.get("auc")), _f(w.logloss), _f(w.calibration, 3)] for w in windows[::-1][:MAX_ROWS]]
    table = _table(["version", "start", "impressions", "requests", "clicks", "CTR", "AUC", "offline AUC", "logloss",
                    "calibration"], rows, len(windows))
    return head + _chart(go, traces, "online AUC per window (dashed: the version's offline evaluation)", "AUC") + table


def _alerts_section(go, folder: MonitorFolder) -> str:
    out = ["<h2>Alerts</h2>", _unreadable(folder, "alerts")]
    if folder.alerts is not None:
        states = Counter(a.state.value for a in folder.alerts)
        firing = [a for a in folder.alerts if a.state is AlertState.firing]
        out.append(f'<p class="summary">Now: <b>{len(firing)} firing</b>, {states["pending"]} pending, '
                   f'{states["resolved"]} resolved</p>')
        items = "".join(f'<li class="error">{_e(a.message)}</li>' for a in firing)
        out.append(f'<ul class="anomalies">{items}</ul>' if firing else "")
    elif "alerts.json" not in folder.unreadable:
        out.append(_note("No alerts.json: the monitor has not evaluated a rule yet."))
    events = folder.events
    if not events:
        return "".join(out) + _note("No alert fired yet (alerts.jsonl: every firing and resolved transition).")
    traces = []
    for state in ("firing", "resolved"):
        mine = [a for a, _ in events if a.state.value == state]
        traces.append(go.Scatter(x=[_x(a.updated_at) for a in mine], y=[_e(a.rule) for a in mine], mode="markers", name=state,
                                 marker=dict(color=_STATE_COLORS[state], size=11, symbol="triangle-up" if state == "firing" else "circle"),
                                 text=[_e(a.message) for a in mine], hovertemplate="%{text}<extra></extra>"))
    rows = [[_utc(a.updated_at), f'<td class="{a.state.value}">{a.state.value}</td>', _e(a.rule), _e(a.signal), _f(a.value),
             f"{_e(a.op)} {a.threshold:g}", _e(a.severity), f'<td class="msg">{_e(a.message)}</td>']
            for a, _ in events[::-1][:MAX_ROWS]]
    out += [_chart(go, traces, "fired and resolved", "rule", yaxis_type="category"),
            _table(["at", "state", "rule", "signal", "value", "condition", "severity", "message"], rows, len(events))]
    return "".join(out)


def _retrain_section(folder: MonitorFolder) -> str:
    head = "<h2>Retraining</h2>" + _unreadable(folder, "retrain.json")
    state = folder.retrain
    if state is None or not state.history:
        return head + ("" if "retrain.json" in folder.unreadable else _note(
            "No retraining triggered yet (monitor.retrain.on_alerts, monitor.retrain.schedule, or clusters/retrain-cronjob.yaml)."))
    statuses = Counter(r.status for r in state.history)
    line = ", ".join(f"{n} {_e(s)}" for s, n in sorted(statuses.items()))
    rows = [[_e(r.submission_id), _utc(r.at), f'<td class="msg">{_e(r.reason)}</td>', _e(r.status), _utc(r.finished_at),
             f"{r.finished_at - r.at:.0f}s" if r.finished_at is not None else "-", f'<td class="msg">{_e(r.error)}</td>']
            for r in state.history[::-1][:MAX_ROWS]]
    last = f"; the last alert-triggered one at {_utc(state.last_alert_retrain)}" if state.last_alert_retrain else ""
    return (head + f'<p class="summary">{len(state.history)} retraining job(s): {line}{last}</p>'
            + _table(["submission id", "triggered", "reason", "status", "finished", "took", "error"], rows, len(state.history)))


def _online_section(go, folder: MonitorFolder) -> str:
    head = "<h2>Online learning</h2>" + _unreadable(folder, "online.json")
    if folder.online is None:
        return head + ("" if "online.json" in folder.unreadable else
                       _note("No online learning updates: monitor.online.enabled is false (there is no online.json)."))
    updates = folder.online["history"]
    if not updates:
        return head + _note(f"Online learning is on and has made no update yet (rows logged after "
                            f"{_utc(folder.online.get('watermark'))} are the next ones used).")
    pushed = sum(bool(u.get("pushed")) for u in updates)
    at = [_x(u["at"]) for u in updates]
    traces = [go.Scatter(x=at, y=[_y(u.get(k)) for u in updates], mode="lines+markers", name=name)
              for k, name in (("auc_base", "serving version (base)"), ("auc_new", "candidate"))]
    rows = [[_utc(u["at"]), _e(u.get("base_version", "")), _e(u.get("version") or "-"), f"{u.get('rows', 0):,}",
             f"{u.get('train_rows', 0):,}", f"{u.get('holdout_rows', 0):,}", _f(u.get("auc_base")), _f(u.get("auc_new")),
             "yes" if u.get("pushed") else "no", f'<td class="msg">{_e(u.get("reason", ""))}</td>'] for u in updates[::-1][:MAX_ROWS]]
    return (head + f'<p class="summary">{len(updates)} update(s), {pushed} pushed</p>'
            + _chart(go, traces, "held-out AUC of each update", "AUC")
            + _table(["at", "base version", "new version", "rows", "train rows", "held-out rows", "AUC base", "AUC new",
                      "pushed", "reason"], rows, len(updates)))


def render_report(folder: MonitorFolder, *, title: Optional[str] = None, now: Optional[float] = None) -> str:
    """The page as a string (see the module docstring)."""
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError as e:
        raise MissingDependencyError("The HTML monitor report", "plotly") from e
    title = title or f"Monitor report: {folder.model}"
    c = counts(folder)
    line = (f"{c['windows']:,} windows ({c['judged']:,} judged), {c['quality_windows']:,} quality windows, "
            f"{c['firing']} alert(s) firing now ({c['fired']} fired, {c['resolved']} resolved), {c['retrains']} retrain(s), "
            f"{c['online_updates']} online update(s) ({c['pushed']} pushed)")
    bad = f'<div class="unreadable">{len(folder.unreadable)} unreadable file(s): {_e(", ".join(folder.unreadable))}</div>' if folder.unreadable else ""
    parts = [f"<h1>{_e(title)}</h1>",
             f'<table class="sides"><tr><td>model</td><td>{_e(folder.model)}</td></tr><tr><td>folder</td><td>{_e(folder.root)}</td></tr>'
             f"<tr><td>generated</td><td>{_utc(time.time() if now is None else now)} UTC (every time here is UTC)</td></tr></table>",
             f'<p class="summary">{_e(line)}</p>', bad]
    for section in (_drift(go, folder), _quality_section(go, folder), _alerts_section(go, folder), _retrain_section(folder),
                    _online_section(go, folder)):
        parts.append(f"<section>{section}</section>")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(root: Path, out: Path, *, title: Optional[str] = None, now: Optional[float] = None) -> Path:
    """Write the report of ``root`` (``<monitor dir>/<model>``) to ``out`` (utf-8, any artifact URI) and return ``out``.

    >>> write_report(Path(".mlsys/monitor/ctr"), Path("monitor.html"))  # doctest: +SKIP
    """
    from mlsys import storage

    storage.write_text(str(out), render_report(read_folder(Path(root)), title=title, now=now))
    return Path(out)
