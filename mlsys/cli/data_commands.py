"""``mlsys stats``, ``mlsys schema`` and ``mlsys validate``: data tools on files and runs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mlsys.errors import MlsysError


def add_parsers(sub) -> None:
    stats = sub.add_parser("stats", help="compute or show dataset statistics").add_subparsers(dest="action", required=True)
    compute = stats.add_parser("compute", help="statistics of a Parquet/CSV path, on Ray Data")
    compute.add_argument("path")
    compute.add_argument("--out", required=True, help="statistics JSON to write")
    compute.add_argument("--categorical", default="", help="comma-separated integer columns that are ids")
    compute.add_argument("--timestamps", default="", help="comma-separated integer columns that are epoch seconds")
    show = stats.add_parser("show", help="a compact table of a statistics file, or of a pipeline run's splits")
    show.add_argument("source", help="statistics JSON, or an MLflow pipeline run id")
    show.add_argument("--other", help="a second statistics JSON to show beside it")
    schema = sub.add_parser("schema", help="infer a schema").add_subparsers(dest="action", required=True)
    infer = schema.add_parser("infer", help="a schema (YAML) from training statistics")
    infer.add_argument("stats")
    infer.add_argument("--out", required=True)
    infer.add_argument("--curated", help="a curated schema YAML overriding the inferred one field by field")
    infer.add_argument("--max-domain-size", type=int, default=100)
    validate = sub.add_parser("validate", help="anomalies of statistics against a schema (and drift against a previous span)")
    validate.add_argument("stats")
    validate.add_argument("--schema", required=True)
    validate.add_argument("--previous", help="statistics of the previous span, for drift")
    validate.add_argument("--report", help="write an HTML report here")


def _stats(path: str):
    from mlsys.data.statistics import DatasetStatistics

    try:
        return DatasetStatistics.from_json(Path(path).read_text())
    except (OSError, ValueError, KeyError) as e:
        raise MlsysError(f"Cannot read statistics from {path!r}: {e}. Produce one with `mlsys stats compute PATH --out FILE.json`.") from None


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    if args.command == "stats" and args.action == "compute":
        return _compute(args)
    if args.command == "stats" and args.action == "show":
        return _show(args)
    if args.command == "schema":
        return _infer(args)
    return _validate(args)


def _compute(args) -> int:
    from mlsys.cluster import connect
    from mlsys.data.datasets import compute_statistics, read_any
    from mlsys.data.statistics import infer_kinds
    from mlsys.config import ClusterConfig

    if "://" not in args.path and not os.path.exists(args.path):
        raise MlsysError(f"No such file or folder: {args.path!r}")
    connect(ClusterConfig(address=os.environ.get("RAY_ADDRESS", "local")))
    ds = read_any(args.path)
    kinds = infer_kinds(ds.schema().base_schema, _split(args.categorical), _split(args.timestamps))
    stats = compute_statistics(ds, kinds, name=Path(args.path).name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(stats.to_json())
    from mlsys.data.report import format_table

    print(format_table(stats))
    print(f"{stats.rows} rows, {len(stats.features)} features -> {args.out}")
    return 0


def _show(args) -> int:
    from mlsys.data.report import format_table

    if os.path.exists(args.source):
        print(format_table(_stats(args.source), _stats(args.other) if args.other else None))
        return 0
    train, evaluation = _run_statistics(args.source)
    print(format_table(train, evaluation))
    return 0


def _run_statistics(run_id: str):
    """The train and eval statistics recorded by a pipeline run's statistics step."""
    from mlsys.data.statistics import DatasetStatistics
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store
    from mlsys.registry.mlflow_store import Tag
    from mlsys import storage

    import re

    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise MlsysError(f"No such statistics file, and {run_id!r} is not an MLflow run id (32 hex digits)")
    uri = mlflow_store.tracking_uri(HomeConfig(root=os.environ.get("MLSYS_HOME", ".mlsys")))
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        raise MlsysError(f"No tracking store at {uri}: set MLSYS_HOME to the home the run used")
    client = mlflow_store.client(uri)
    try:
        parent = client.get_run(run_id)
    except Exception:
        raise MlsysError(f"{run_id!r} is neither a statistics file nor a run in the tracking store; pass a file or an MLflow run id") from None
    runs = client.search_runs([parent.info.experiment_id], f"tags.{Tag.PARENT} = '{run_id}' and tags.`{Tag.STEP}` = 'statistics'")
    if not runs:
        raise MlsysError(f"run {run_id!r} has no statistics step")
    outputs = json.loads(runs[0].data.tags[Tag.OUTPUTS])
    return tuple(DatasetStatistics.from_dict(storage.read_json(outputs[s])) for s in ("train", "eval"))


def _infer(args) -> int:
    import yaml

    from mlsys.data.schema import apply_curated, infer_schema

    schema = infer_schema(_stats(args.stats), args.max_domain_size)
    if args.curated:
        schema = apply_curated(schema, yaml.safe_load(Path(args.curated).read_text()) or {})
    Path(args.out).write_text(schema.to_yaml())
    print(f"schema with {len(schema.features)} features -> {args.out}")
    return 0


def _validate(args) -> int:
    from mlsys.data.report import write_html
    from mlsys.data.schema import Schema
    from mlsys.data.validation import ValidationConfig, validate

    current = _stats(args.stats)
    previous = _stats(args.previous) if args.previous else None
    result = validate(current, Schema.from_yaml(Path(args.schema).read_text()), ValidationConfig(), previous)
    for a in result.anomalies:
        print(a.line())
    if args.report:
        sides = ([("previous", previous)] if previous else []) + [(current.name or "current", current)]
        write_html(args.report, sides, [result])
        print(f"report -> {args.report}")
    print(f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)")
    return 1 if result.errors else 0
