"""The default pipeline ``pipeline=ctr``:
ingest -> statistics -> schema -> validate -> transform -> train -> evaluate -> register."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlsys import storage
from mlsys.data.config import DataConfig
from mlsys.data.validation import ValidationConfig
from mlsys.features.config import FeaturesConfig
from mlsys.models import ModelConfig
from mlsys.pipeline.step import Pipeline, StepContext, step
from mlsys.registry.config import RegistryConfig
from mlsys.train.config import TrainConfig
from mlsys.train.warm_start import WarmStart


@dataclass(frozen=True)
class IngestOutput:
    events: str  # Parquet dataset: events + user/item attributes + split
    users: str
    items: str
    quarantine: str  # Parquet dataset of malformed rows: raw line, reason, detail (may be empty)


@dataclass(frozen=True)
class StatisticsOutput:
    train: str  # DatasetStatistics JSON per split
    eval: str


@dataclass(frozen=True)
class SchemaOutput:
    schema: str  # the schema in force (inferred, then curated), YAML


@dataclass(frozen=True)
class ValidateOutput:
    anomalies: str  # AnomalyReport JSON per dataset
    report: str  # HTML


@dataclass(frozen=True)
class FeaturesOutput:
    store: str  # the Feast repo folder under MLSYS_HOME ("" with features=none)
    training_set: str  # Parquet dataset: label events + point-in-time features, with split ("" with features=none)


@dataclass(frozen=True)
class MaterializeOutput:
    watermark: str  # the online store's watermark-<online>.json ("" when nothing was materialized)


@dataclass(frozen=True)
class TransformOutput:
    train: str  # Parquet datasets with behaviour sequences, not yet encoded
    eval: str
    preprocessor: str  # the fitted CtrPreprocessor (JSON)
    users: str  # serving tables: users with their latest history, items
    items: str


@dataclass(frozen=True)
class TrainOutput:
    checkpoint: str


@dataclass(frozen=True)
class EvaluateOutput:
    metrics: str


@dataclass(frozen=True)
class RegisterOutput:
    package: str
    model_name: str
    version: str


def _write_table(df, uri: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), uri)


@step()
def ingest(ctx: StepContext, data: DataConfig) -> IngestOutput:
    from mlsys.data import datasets

    source = datasets.read_source(data)
    out = IngestOutput(*(storage.join(ctx.output_uri, n) for n in ("events", "users.parquet", "items.parquet", "quarantine")))
    _quarantine(ctx, source, data, out.quarantine)
    events = datasets.split_by_user(source.events, data.eval_fraction).materialize()
    events.write_parquet(out.events)
    _write_table(source.users, out.users)
    _write_table(source.items, out.items)
    stats = events.groupby("split").aggregate(*_count_and_clicks()).to_pandas()
    for row in stats.itertuples():
        ctx.log_metrics({f"{row.split}_rows": row.rows, f"{row.split}_click_rate": row.clicks / row.rows})
    return out


def _quarantine(ctx: StepContext, source, data: DataConfig, uri: str) -> None:
    """Write malformed rows with their reasons; stop above ``data.max_bad_fraction``."""
    from mlsys.data.parsing import QuarantineSummary
    from mlsys.errors import TooManyBadRowsError

    import pandas as pd

    from mlsys.data.parsing import BAD_COLUMNS

    bad = source.bad_rows.to_pandas() if source.bad_rows is not None else pd.DataFrame()
    bad = bad.reindex(columns=list(BAD_COLUMNS))  # an empty Dataset converts without columns
    summary = QuarantineSummary.of(source.events.count(), bad)
    # Always written, empty or not: readers (and the step cache) can rely on it.
    _write_table(bad.astype({"line_number": "int64", "raw": str, "reason": str, "detail": str}), storage.join(uri, "bad_rows.parquet"))
    ctx.log_metrics({"rows_read": summary.rows, "bad_rows": summary.bad, **{f"bad_rows_{r}": n for r, n in summary.by_reason.items()}})
    if summary.bad:
        print(f"[ingest] quarantined {summary.bad} malformed row(s) of {summary.rows} ({summary.by_reason}) to {uri}")
    if summary.bad_fraction > data.max_bad_fraction:
        source_name = data.path or str(data.source.value)
        raise TooManyBadRowsError(source_name, summary.bad, summary.rows, data.max_bad_fraction, summary.by_reason, uri)


def _count_and_clicks():
    from ray.data.aggregate import Count, Sum

    return Count(alias_name="rows"), Sum("label", alias_name="clicks")


def event_kinds(schema):
    """Feature kinds of the events table: ids are categorical, `timestamp` a time."""
    from mlsys.data.statistics import infer_kinds

    kinds = infer_kinds(schema, categorical=["user_id", "item_id"], timestamps=["timestamp"])
    kinds.pop("split", None)
    return kinds


@step()
def statistics(ctx: StepContext, ingested: IngestOutput) -> StatisticsOutput:
    from mlsys.data.datasets import compute_statistics, read_parquet

    events = read_parquet(ingested.events)  # a task per file, fused with the statistics map
    kinds = event_kinds(events.schema().base_schema)
    out = StatisticsOutput(*(storage.join(ctx.output_uri, f"{s}.json") for s in ("train", "eval")))
    for split, uri in (("train", out.train), ("eval", out.eval)):
        stats = compute_statistics(events.filter(expr=f"split == '{split}'"), kinds, name=split)
        storage.write_json(uri, stats.to_dict())
        ctx.log_metric(f"{split}_rows", stats.rows)
    return out


@step()
def schema(ctx: StepContext, stats: StatisticsOutput, validation: ValidationConfig) -> SchemaOutput:
    import yaml

    from mlsys.data.schema import apply_curated, infer_schema
    from mlsys.data.statistics import DatasetStatistics

    inferred = infer_schema(DatasetStatistics.from_dict(storage.read_json(stats.train)), validation.max_domain_size)
    if validation.schema_file:
        with open(validation.schema_file) as f:
            inferred = apply_curated(inferred, yaml.safe_load(f) or {})
    out = SchemaOutput(schema=storage.join(ctx.output_uri, "schema.yaml"))
    Path(out.schema).parent.mkdir(parents=True, exist_ok=True)
    Path(out.schema).write_text(inferred.to_yaml())
    ctx.log_metric("features", len(inferred.features))
    return out


@step()
def validate(ctx: StepContext, stats: StatisticsOutput, schema: SchemaOutput, validation: ValidationConfig) -> ValidateOutput:
    from mlsys.data import report
    from mlsys.data.schema import Schema
    from mlsys.data.statistics import DatasetStatistics
    from mlsys.data.validation import validate as check
    from mlsys.errors import DataValidationError
    from mlsys.registry import mlflow_store

    train, evaluation = (DatasetStatistics.from_dict(storage.read_json(u)) for u in (stats.train, stats.eval))
    expected = Schema.from_yaml(Path(schema.schema).read_text())
    previous = None
    if validation.previous_statistics:
        previous = DatasetStatistics.from_dict(storage.read_json(validation.previous_statistics))
        previous.name = f"previous span ({previous.name or 'train'})"
        train.name = "this span (train)"
    results = [check(train, expected, validation, previous), check(evaluation, expected, validation)] if validation.enabled else []
    out = ValidateOutput(anomalies=storage.join(ctx.output_uri, "anomalies.json"), report=storage.join(ctx.output_uri, "report.html"))
    storage.write_json(out.anomalies, [json.loads(r.to_json()) for r in results])
    sides = ([("previous span", previous)] if previous else []) + [("train", train), ("eval", evaluation)]
    report.write_html(out.report, sides, results, title=f"Data report ({ctx.fingerprint[:12]})")
    mlflow_store.client(ctx.tracking_uri).log_artifact(ctx.run_id, out.report, "validation")
    errors = [a for r in results for a in r.errors]
    warnings = [a for r in results for a in r.warnings]
    ctx.log_metrics({"anomaly_errors": len(errors), "anomaly_warnings": len(warnings)})
    for a in warnings:
        print(f"[validate] {a.line()}")
    if errors:
        raise DataValidationError("the ingested data", [a.line() for a in errors], out.report)
    return out


@step()
def transform(
    ctx: StepContext, ingested: IngestOutput, validated: ValidateOutput, feats: FeaturesOutput, data: DataConfig, features: FeaturesConfig, warm: WarmStart
) -> TransformOutput:
    import pandas as pd
    import ray

    from mlsys.data import datasets
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.features.training import numeric_inputs
    from mlsys.train import warm_start

    events = ray.data.read_parquet(ingested.events)
    # features=movielens: every model input of the training set comes from the feature views (point-in-time)
    labelled = ray.data.read_parquet(feats.training_set) if feats.training_set else datasets.add_history(events, data.history_length)
    with_history = labelled.materialize()
    splits = {s: with_history.filter(expr=f"split == '{s}'") for s in ("train", "eval")}
    preprocessor = CtrPreprocessor(data.history_length, data.max_genres, data.vocab_min_count, numeric_inputs(features))
    if warm.active:  # old ids keep their indices, new ones are appended (see mlsys.train.warm_start)
        preprocessor.continuing(warm_start.base_preprocessor(warm))
    preprocessor.fit(splits["train"])
    out = TransformOutput(*(storage.join(ctx.output_uri, n) for n in ("train", "eval", "preprocessor.json", "users.parquet", "items.parquet")))
    splits["train"].write_parquet(out.train)
    splits["eval"].write_parquet(out.eval)
    storage.write_json(out.preprocessor, json.loads(preprocessor.to_json()))
    users = pd.read_parquet(ingested.users).merge(datasets.user_histories(events, data.history_length), on="user_id", how="left")
    users["history"] = [h if isinstance(h, list) else list(h) if h is not None else [] for h in users["history"]]
    _write_table(users, out.users)
    _write_table(pd.read_parquet(ingested.items), out.items)
    spec = preprocessor.input_spec()
    ctx.log_metrics({f"vocab_{f}": n for f, n in zip(spec.categorical_fields, spec.categorical_sizes)})
    return out


@step()
def features(ctx: StepContext, ingested: IngestOutput, validated: ValidateOutput, data: DataConfig, features: FeaturesConfig) -> FeaturesOutput:
    """features=movielens: offline sources + `feast apply` under MLSYS_HOME, then the PIT training set on Ray."""
    if not features.enabled:
        return FeaturesOutput(store="", training_set="")
    import pandas as pd

    from mlsys.features import training

    events = pd.read_parquet(ingested.events)
    rows = training.write_offline_sources(features, ctx.home, events, pd.read_parquet(ingested.users),
                                          pd.read_parquet(ingested.items), data.history_length)
    out = FeaturesOutput(store=training.store_paths(features, ctx.home).root, training_set=storage.join(ctx.output_uri, "training_set"))
    labels = training.build_training_set(features, ctx.home, ingested.events, out.training_set)
    ctx.log_metrics({**{f"source_rows_{v}": n for v, n in rows.items()}, "training_rows": labels})
    return out


@step()
def materialize(ctx: StepContext, feats: FeaturesOutput, features: FeaturesConfig) -> MaterializeOutput:
    """Offline -> online store, from the watermark of the last run (incremental, idempotent)."""
    if not (features.enabled and features.materialize):
        return MaterializeOutput(watermark="")
    from mlsys.features.materialize import materialize as run
    from mlsys.features.store import store_paths

    report = run(features, ctx.home)
    for i in report.intervals:
        print(f"[materialize] {i.view}: {i.rows} offline rows in ({i.start}, {i.end}]")
    ctx.log_metrics({"materialized_rows": report.rows, "materialize_s": report.seconds})
    return MaterializeOutput(watermark=store_paths(features, ctx.home).watermark)


def _load_preprocessor(uri: str):
    from mlsys.data.preprocessor import CtrPreprocessor

    return CtrPreprocessor.from_json(json.dumps(storage.read_json(uri)))


@step()
def train(ctx: StepContext, data: TransformOutput, model: ModelConfig, cfg: TrainConfig, warm: WarmStart) -> TrainOutput:
    import ray

    from mlsys.train import trainer

    preprocessor = _load_preprocessor(data.preprocessor)
    result = trainer.fit(
        preprocessor.transform(ray.data.read_parquet(data.train)),
        preprocessor.transform(ray.data.read_parquet(data.eval)),
        preprocessor.input_spec(),
        model,
        cfg,
        storage_path=storage.join(ctx.home, "ray_results"),
        run_name=f"train-{ctx.fingerprint[:16]}",
        warm=warm,
    )
    out = TrainOutput(checkpoint=storage.join(ctx.output_uri, "checkpoint"))
    storage.upload_dir(result.checkpoint_dir, out.checkpoint)
    for epoch_metrics in result.history:
        epoch = int(epoch_metrics["epoch"])
        ctx.log_metrics({k: v for k, v in epoch_metrics.items() if k != "epoch"}, step=epoch)
    return out


def _trained_model(data: TransformOutput, trained: TrainOutput, model: ModelConfig):
    from mlsys.models import build_model
    from mlsys.train import checkpoint

    preprocessor = _load_preprocessor(data.preprocessor)
    module = build_model(preprocessor.input_spec(), model)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.load(storage.download_dir(trained.checkpoint, tmp), module)
    return preprocessor, module.eval()


@step()
def evaluate(ctx: StepContext, data: TransformOutput, trained: TrainOutput, model: ModelConfig) -> EvaluateOutput:
    import numpy as np
    import pandas as pd
    import torch

    from mlsys.evaluate.metrics import ctr_metrics
    from mlsys.models import MODEL_INPUTS

    preprocessor, module = _trained_model(data, trained, model)
    frame = pd.read_parquet(data.eval)
    probs = []
    with torch.no_grad():
        for start in range(0, len(frame), 8192):
            inputs = preprocessor.transform_batch(frame.iloc[start : start + 8192])
            probs.append(torch.sigmoid(module(*(torch.from_numpy(inputs[k]) for k in MODEL_INPUTS))).numpy())
    metrics = ctr_metrics(frame["user_id"].to_numpy(), frame["label"].to_numpy(), np.concatenate(probs))
    out = EvaluateOutput(metrics=storage.join(ctx.output_uri, "metrics.json"))
    storage.write_json(out.metrics, metrics)
    ctx.log_metrics({f"eval_{k}": v for k, v in metrics.items()})
    return out


@step()
def register(
    ctx: StepContext,
    data: TransformOutput,
    trained: TrainOutput,
    evaluation: EvaluateOutput,
    model: ModelConfig,
    registry: RegistryConfig,
    warm: WarmStart,
) -> RegisterOutput:
    import pandas as pd

    from mlsys.registry import mlflow_store
    from mlsys.registry.package import write_package

    preprocessor, module = _trained_model(data, trained, model)
    metrics = storage.read_json(evaluation.metrics)
    lineage = {"fingerprint": ctx.fingerprint, "step_run_id": ctx.run_id, "checkpoint": trained.checkpoint,
               "train": data.train, "eval": data.eval, "eval_metrics": metrics, "warm_start": warm.lineage()}
    with tempfile.TemporaryDirectory() as tmp:
        local = write_package(
            Path(tmp) / "package",
            model=module,
            model_config=model,
            preprocessor=preprocessor,
            users=pd.read_parquet(data.users),
            items=pd.read_parquet(data.items),
            lineage=lineage,
        )
        package_uri = storage.join(ctx.output_uri, "package")
        storage.upload_dir(local, package_uri)
    tags = {"mlsys.fingerprint": ctx.fingerprint, **{f"eval_{k}": round(v, 6) for k, v in metrics.items()}}
    if warm.active:
        tags["mlsys.warm_start"] = f"{warm.model_name}/{warm.version}" if warm.version else warm.package
    version = mlflow_store.register(ctx.tracking_uri, ctx.run_id, package_uri, registry.model_name, registry.alias, tags)
    ctx.log_metric("model_version", int(version.version))
    return RegisterOutput(package=version.source, model_name=version.name, version=version.version)


CTR = Pipeline("ctr", (ingest, statistics, schema, validate, features, materialize, transform, train, evaluate, register))
PIPELINES = {"ctr": CTR}
