"""The Prometheus rules and the Grafana dashboard under monitoring/ against the metrics the service exports.

Every ``ray_mlsys_*`` name (and every label it is filtered by) must be one that ``mlsys/serve/metrics.py``
defines, as Ray exports it (a Counter ``mlsys_x`` as ``ray_mlsys_x_total``, a Histogram as ``_bucket``,
``_sum``, ``_count``, a Gauge as ``ray_mlsys_x``), so renaming a metric there fails here. With ``promtool``
on PATH (Debian's ``prometheus`` package, which ``make test`` installs) the files are also checked and the
alert rules run against synthetic series (``monitoring/prometheus/rules_test.yml``).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlsys.serve import metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "monitoring" / "prometheus"
DASHBOARD = REPO / "monitoring" / "grafana" / "mlsys-ranking.json"
SERVE_TAGS = {"application", "deployment", "replica"}  # added by Ray Serve to every metric of a replica
SEVERITIES = {"info", "warning", "critical"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH: it ships with Debian's "
                                    "`prometheus` package, which `make test-servers` installs")


def defined_metrics() -> dict[str, frozenset[str]]:
    """``{exported name: its label names}`` read from the metric objects ``_Series`` makes (without Ray)."""
    body = ast.parse(inspect.getsource(metrics._Series)).body[0]
    constants = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.walk(body)  # base = (...)
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and isinstance(node.value, ast.Tuple)}

    def names(node) -> list[str]:  # a tag_keys value: a name, a tuple, or a tuple with *name
        if isinstance(node, ast.Name):
            return list(constants[node.id])
        if isinstance(node, ast.Starred):
            return names(node.value)
        return [name for element in node.elts for name in names(element)] if isinstance(node, ast.Tuple) else [node.value]

    out: dict[str, frozenset[str]] = {}
    for node in ast.walk(body):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("Counter", "Histogram", "Gauge")):
            continue
        tags = names(next(k.value for k in node.keywords if k.arg == "tag_keys"))
        first = node.args[0]
        if isinstance(first, ast.JoinedStr):  # the counters: f"mlsys_{name}" for name in COUNTERS
            assert ast.unparse(first) == "f'mlsys_{name}'", ast.unparse(first)
            made = [f"mlsys_{name}" for name in metrics.COUNTERS]
        else:
            made = [first.value]
        suffixes = {"Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"], "Gauge": [""]}[node.func.attr]
        for name in made:
            for suffix in suffixes:
                out[f"ray_{name}{suffix}"] = frozenset(tags) | SERVE_TAGS | ({"le"} if suffix == "_bucket" else set())
    return out


DEFINED = defined_metrics()
ALL_LABELS = frozenset().union(*DEFINED.values())
NAME_REGEX = re.compile(r'__name__\s*=~\s*"([^"]*)"')
SELECTOR = re.compile(r"\b(ray_[A-Za-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def names_of_regex(pattern: str) -> list[str]:
    """The names a ``{__name__=~"prefix(a|b)suffix"}`` selector means (the one regex form used)."""
    match = re.fullmatch(r"([A-Za-z0-9_]*)\(([A-Za-z0-9_|]+)\)([A-Za-z0-9_]*)", pattern)
    assert match, f"write __name__ regexes as prefix(a|b)suffix, not {pattern!r}"
    return [match[1] + alternative + match[3] for alternative in match[2].split("|")]


def problems_of(expr: str) -> list[str]:
    """What in ``expr`` names a metric or a label that the service does not export."""
    problems = []
    for selector in re.finditer(r"\{[^}]*__name__[^}]*\}", expr):
        names = names_of_regex(NAME_REGEX.search(selector[0])[1])
        problems += [f"{name} is not exported" for name in names if name.startswith("ray_mlsys_") and name not in DEFINED]
        labels = frozenset.intersection(*(DEFINED.get(n, ALL_LABELS) for n in names))
        problems += [f"{names} have no label {m}" for m in MATCHER.findall(selector[0]) if m != "__name__" and m not in labels]
    for name, matchers in SELECTOR.findall(NAME_REGEX.sub("", expr)):
        if name.startswith("ray_mlsys_"):
            if name not in DEFINED:
                problems.append(f"{name} is not exported by mlsys/serve/metrics.py")
                continue
            problems += [f"{name} has no label {m}" for m in MATCHER.findall(matchers) if m not in DEFINED[name]]
        elif name.startswith("ray_serve_") and name[len("ray_"):] not in RAY_SERVE_NAMES:
            problems.append(f"{name} is not a metric of the installed Ray Serve")
    for labels in GROUPING.findall(expr):
        problems += [f"no metric has label {label}" for label in re.findall(r"\w+", labels) if label not in ALL_LABELS]
    return problems


def _ray_serve_names() -> set[str]:
    """The metric names written as string literals in the installed Ray Serve's source (without importing Ray)."""
    serve = Path(importlib.util.find_spec("ray").submodule_search_locations[0]) / "serve"
    return {m for f in serve.rglob("*.py") for m in re.findall(r'"(serve_[a-z0-9_]+)"', f.read_text(errors="replace"))}


RAY_SERVE_NAMES = _ray_serve_names()


def rules_of(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


ALERTS = rules_of(PROMETHEUS / "rules.yml")
RECORDED = rules_of(PROMETHEUS / "recording.yml")


def dashboard_targets() -> list[tuple[dict, dict]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel, target) for panel in board["panels"] if panel["type"] != "row" for target in panel["targets"]]


def test_the_metric_names_are_read_from_the_module():
    assert {"ray_mlsys_requests_total", "ray_mlsys_errors_total", "ray_mlsys_stage_latency_ms_bucket",
            "ray_mlsys_score_count", "ray_mlsys_serving", "ray_mlsys_refused"} <= DEFINED.keys()
    assert {"route", "status"} <= DEFINED["ray_mlsys_errors_total"] and "stage" in DEFINED["ray_mlsys_batch_size_sum"]
    assert "reason" in DEFINED["ray_mlsys_refused"] and "variant" not in DEFINED["ray_mlsys_refused"]
    assert problems_of('sum by (model) (rate(ray_mlsys_request_total{route="/v1/rank"}[5m]))') == [
        "ray_mlsys_request_total is not exported by mlsys/serve/metrics.py"]
    assert problems_of('rate(ray_mlsys_candidates_bucket{stage="dense"}[5m])') == ["ray_mlsys_candidates_bucket has no label stage"]
    assert problems_of('rate({__name__=~"ray_mlsys_(requests|error)_total"}[5m])') == ["ray_mlsys_error_total is not exported"]
    assert problems_of("sum by (modle) (ray_serve_deployment_replica_healthy)") == ["no metric has label modle"]
    assert problems_of("ray_serve_replica_healthy") == ["ray_serve_replica_healthy is not a metric of the installed Ray Serve"]


def test_every_alert_has_for_severity_summary_description_and_runbook():
    assert ALERTS and all("alert" in rule for rule in ALERTS)
    assert len({rule["alert"] for rule in ALERTS}) == len(ALERTS)
    text = (PROMETHEUS / "rules.yml").read_text()
    for rule in ALERTS:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: `for:` is missing"
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
        assert rule["annotations"]["runbook"] == f"docs/monitoring.md#{name.lower()}", name
        assert "\n" not in rule["expr"], f"{name}: keep the expression on one line (tests substitute its threshold)"
    # A test copy shortens `for:` by text substitution: each sits on its own line.
    assert len(re.findall(r"^ +for: \d+[smh]$", text, flags=re.M)) == len(ALERTS)


def test_each_runbook_anchor_has_its_section():
    doc = REPO / "docs" / "monitoring.md"
    doc = doc if doc.exists() else REPO / "monitoring" / "README.md"
    runbook = doc.read_text().split("\n## Runbook\n", 1)
    assert len(runbook) == 2, f"{doc} has no '## Runbook' section"
    headings = set(re.findall(r"^### (\S+)$", runbook[1].split("\n## ", 1)[0], flags=re.M))
    assert headings == {rule["alert"] for rule in ALERTS}


def test_the_rules_use_only_exported_metrics_and_labels():
    recorded = {rule["record"] for rule in RECORDED}
    for rule in RECORDED + ALERTS:
        assert problems_of(rule["expr"]) == [], rule
    used = {name for rule in ALERTS for name in re.findall(r"\bmlsys:[a-z0-9_:]+", rule["expr"])}
    assert used <= recorded, f"rules.yml uses {used - recorded}, which recording.yml does not record"


def test_the_dashboard_is_valid_and_uses_only_exported_metrics():
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["definition"] == "label_values(ray_mlsys_requests_total, model)"
    assert "version" in variables
    for panel in board["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    for panel, target in dashboard_targets():
        assert target.get("expr"), f"{panel['title']}: a target without an expr"
        assert problems_of(target["expr"]) == [], (panel["title"], target["expr"])
    titles = " ".join(panel["title"] for panel in board["panels"]).lower()
    for subject in ("requests/s", "error ratio", "p50", "p99", "batch size", "candidates", "score distribution",
                    "serving versions", "refused versions", "cache hit ratio", "unknown users", "healthy replicas"):
        assert subject in titles, subject


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_accepts_the_rules_and_the_config():
    assert "SUCCESS: 6 rules found" in _promtool("check", "rules", "recording.yml")
    _promtool("check", "rules", "rules.yml")
    _promtool("check", "config", "prometheus.yml")  # also checks the rule files it names


@needs_promtool
def test_the_alerts_fire_on_synthetic_series():
    """rules_test.yml: each alert fires (labels and rendered annotations) when it should, not before its
    `for:`, and not for the sandbox apps or the shadow."""
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """Each target's expr as a recording rule (Grafana's $__rate_interval made a plain range)."""
    rules = [{"record": f"dashboard:panel_{panel['id']}:{target['refId']}",
              "expr": target["expr"].replace("$__rate_interval", "5m")} for panel, target in dashboard_targets()]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
