"""The default pipeline ``pipeline=ctr``, top to bottom:

ingest -> statistics -> schema -> validate -> features -> materialize -> transform
-> tune -> train -> package -> evaluate -> register -> bless -> push

Each step is a thin declaration: it names its inputs (earlier steps' outputs)
and config sections by type, calls its stage's code (``mlsys.data``,
``mlsys.features``, ``mlsys.train``, ``mlsys.registry``, ``mlsys.evaluate``)
and returns the URIs it wrote. The code a step reaches is its fingerprint's
code part (:mod:`mlsys.pipeline.fingerprint`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlsys import storage
from mlsys.data.config import DataConfig
from mlsys.data.validation import ValidationConfig
from mlsys.evaluate.config import EvaluateConfig
from mlsys.features.config import FeaturesConfig
from mlsys.models import ModelConfig
from mlsys.pipeline.step import Pipeline, StepContext, step
from mlsys.registry.config import RegistryConfig
from mlsys.serve.config import ServeConfig
from mlsys.train.config import TrainConfig
from mlsys.train.warm_start import WarmStart
from mlsys.tune.config import TuneConfig

# -- outputs: the artifacts each step writes -----------------------------------------


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
class TuneOutput:
    best: str  # JSON: the best trial's params, its metric value and epoch, trial counts ("" with tune=none)


@dataclass(frozen=True)
class TrainOutput:
    checkpoint: str


@dataclass(frozen=True)
class PackageOutput:
    package: str  # the model package folder (ONNX, weights, preprocessor, tables, checksums)


@dataclass(frozen=True)
class EvaluateOutput:
    metrics: str


@dataclass(frozen=True)
class RegisterOutput:
    package: str
    model_name: str
    version: str


@dataclass(frozen=True)
class BlessOutput:
    evaluation: str  # Evaluation JSON: candidate and champion, overall and per slice, with CIs
    blessing: str  # BlessingDecision JSON: every check, its numbers, the one-line reason
    estimate: str  # PreReleaseEstimate JSON (null without logged requests)
    report: str  # HTML evaluation report


@dataclass(frozen=True)
class PushOutput:
    decision: str  # JSON: pushed or not, why, the infra validation, the alias move


# -- steps ---------------------------------------------------------------------------


@step()
def ingest(ctx: StepContext, data: DataConfig) -> IngestOutput:
    from mlsys.data.ingest import ingest as run

    out = IngestOutput(*(storage.join(ctx.output_uri, n) for n in ("events", "users.parquet", "items.parquet", "quarantine")))
    result = run(data, out.events, out.users, out.items, out.quarantine)
    ctx.set_tag("executor", result.executor.value)
    ctx.log_metrics(result.metrics)
    return out


@step()
def statistics(ctx: StepContext, ingested: IngestOutput, data: DataConfig) -> StatisticsOutput:
    from mlsys.data.splits import split_statistics

    out = StatisticsOutput(*(storage.join(ctx.output_uri, f"{s}.json") for s in ("train", "eval")))
    result = split_statistics(data, ingested.events, {"train": out.train, "eval": out.eval})
    ctx.set_tag("executor", result.executor.value)
    ctx.log_metrics(result.rows)
    return out


@step()
def schema(ctx: StepContext, stats: StatisticsOutput, validation: ValidationConfig) -> SchemaOutput:
    from mlsys.data.schema import schema_for

    inferred = schema_for(stats.train, validation.max_domain_size, validation.schema_file)
    out = SchemaOutput(schema=storage.join(ctx.output_uri, "schema.yaml"))
    storage.write_text(out.schema, inferred.to_yaml())
    ctx.log_metric("features", len(inferred.features))
    return out


@step()
def validate(ctx: StepContext, stats: StatisticsOutput, schema: SchemaOutput, validation: ValidationConfig) -> ValidateOutput:
    from mlsys.data.validation import validate_splits
    from mlsys.errors import DataValidationError
    from mlsys.registry import mlflow_store

    out = ValidateOutput(anomalies=storage.join(ctx.output_uri, "anomalies.json"), report=storage.join(ctx.output_uri, "report.html"))
    result = validate_splits(stats.train, stats.eval, schema.schema, validation, out.anomalies, out.report,
                             title=f"Data report ({ctx.fingerprint[:12]})")
    mlflow_store.client(ctx.tracking_uri).log_artifact(ctx.run_id, out.report, "validation")
    ctx.log_metrics({"anomaly_errors": len(result.errors), "anomaly_warnings": len(result.warnings)})
    for a in result.warnings:
        print(f"[validate] {a.line()}")
    if result.errors:
        raise DataValidationError("the ingested data", [a.line() for a in result.errors], out.report)
    return out


@step()
def features(ctx: StepContext, ingested: IngestOutput, validated: ValidateOutput, data: DataConfig, features: FeaturesConfig) -> FeaturesOutput:
    """features=feast: offline sources + `feast apply` under MLSYS_HOME, then the PIT training set on Ray."""
    if not features.enabled:
        return FeaturesOutput(store="", training_set="")
    from mlsys.data.feature_schema import FeatureSchema
    from mlsys.features.store import store_paths
    from mlsys.features.training import build_features

    out = FeaturesOutput(store=store_paths(features, ctx.home).root, training_set=storage.join(ctx.output_uri, "training_set"))
    ctx.log_metrics(build_features(features, ctx.home, FeatureSchema.of(data), ingested.events, ingested.users, ingested.items,
                                   out.training_set))
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


@step()
def transform(
    ctx: StepContext, ingested: IngestOutput, validated: ValidateOutput, feats: FeaturesOutput, data: DataConfig, features: FeaturesConfig, warm: WarmStart
) -> TransformOutput:
    from mlsys.data.feature_schema import FeatureSchema
    from mlsys.data.transform import TransformUris, transform as run
    from mlsys.features.training import numeric_inputs
    from mlsys.train import warm_start

    out = TransformOutput(*(storage.join(ctx.output_uri, n) for n in ("train", "eval", "preprocessor.json", "users.parquet", "items.parquet")))
    # features=feast: every model input of the training set comes from the feature views (point-in-time)
    result = run(data, ingested.events, ingested.users, ingested.items, TransformUris(**vars(out)),
                 training_set_uri=feats.training_set, numeric=numeric_inputs(features, FeatureSchema.of(data)),
                 base=warm_start.base_preprocessor(warm) if warm.active else None)
    ctx.set_tag("executor", result.executor.value)
    spec = result.preprocessor.input_spec()
    ctx.log_metrics({f"vocab_{f}": n for f, n in zip(spec.categorical_fields, spec.categorical_sizes)})
    return out


@step()
def tune(ctx: StepContext, data: TransformOutput, model: ModelConfig, cfg: TrainConfig, tune: TuneConfig) -> TuneOutput:
    """tune=optuna_asha: Ray Tune trials of the train step's training (Optuna proposes, ASHA stops
    early) on the training split less a held-out part; the best parameters become the train step's.
    The same command after an interrupted run resumes it (the experiment is keyed by this fingerprint)."""
    if not tune.enabled:
        return TuneOutput(best="")
    import json

    from mlsys.data.datasets import read_parquet
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.tune import tuner

    preprocessor = CtrPreprocessor.load(data.preprocessor)
    result = tuner.tune(preprocessor.transform(read_parquet(data.train)), preprocessor.input_spec(), model, cfg, tune,
                        home=ctx.home, name=f"tune-{ctx.fingerprint[:16]}", tracking_uri=ctx.tracking_uri, parent_run_id=ctx.run_id)
    out = TuneOutput(best=storage.join(ctx.output_uri, "best.json"))
    storage.write_json(out.best, result.to_dict())
    ctx.set_tag("tuned", json.dumps(result.params))
    ctx.log_metrics({f"best_valid_{tune.metric}": result.value, "trials": result.trials, "trials_stopped_early": result.stopped_early,
                     "trial_epochs": result.trial_epochs, "tune_wall_s": result.wall_s, "trial_s": result.trial_s})
    print(f"[tune] best of {result.trials} trials: valid {tune.metric} {result.value:.4f} at epoch {result.epoch} (trial {result.trial_id}): "
          + ", ".join(f"{k}={v}" for k, v in result.params.items()))
    return out


@step()
def train(ctx: StepContext, data: TransformOutput, tuned: TuneOutput, model: ModelConfig, cfg: TrainConfig, warm: WarmStart) -> TrainOutput:
    """Trains on the whole training split, with the tune step's best parameters when it tuned."""
    import json

    from mlsys.data.datasets import read_parquet
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.train import trainer
    from mlsys.tune.space import tuned_configs

    model, cfg = tuned_configs(tuned.best, model, cfg)
    if tuned.best:
        ctx.set_tag("tuned", storage.read_text(tuned.best))
    preprocessor = CtrPreprocessor.load(data.preprocessor)
    # read_parquet: a read task per file (Ray 2.60's default reader starts 32 footer readers per read:
    # 5.6-6.1 s to materialize the train split against 2.5 s, docs/benchmarks.md, train step)
    result = trainer.fit(
        preprocessor.transform(read_parquet(data.train)),
        preprocessor.transform(read_parquet(data.eval)),
        preprocessor.input_spec(),
        model,
        cfg,
        storage_path=storage.join(ctx.home, "ray_results"),
        run_name=f"train-{ctx.fingerprint[:16]}",
        warm=warm,
    )
    out = TrainOutput(checkpoint=storage.join(ctx.output_uri, "checkpoint"))
    storage.upload_dir(result.checkpoint_dir, out.checkpoint)  # its state.json keeps every attempt's workers
    if result.workers:  # where the last attempt's workers ran (every attempt: the checkpoint's state.json)
        ctx.set_tag("train_workers", json.dumps(result.workers[-1]))
    ctx.set_tag("train_placement", json.dumps({"placement_strategy": cfg.placement_strategy, "resources_per_worker": cfg.worker_resources()}))
    for epoch_metrics in result.history:
        ctx.log_metrics({k: v for k, v in epoch_metrics.items() if k != "epoch"}, step=int(epoch_metrics["epoch"]))
    return out


@step()
def package(ctx: StepContext, stats: StatisticsOutput, data: TransformOutput, tuned: TuneOutput, trained: TrainOutput, model: ModelConfig,
            warm: WarmStart) -> PackageOutput:
    """The model package that evaluate scores and register publishes: what serves is what was measured
    (with the training statistics, the baseline of online skew)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.registry.package import write_package
    from mlsys.train.checkpoint import trained_model
    from mlsys.tune.space import tuned_model

    model = tuned_model(tuned.best, model)  # the architecture the train step trained
    preprocessor = CtrPreprocessor.load(data.preprocessor)
    module = trained_model(trained.checkpoint, preprocessor.input_spec(), model)
    lineage = {"fingerprint": ctx.fingerprint, "step_run_id": ctx.run_id, "checkpoint": trained.checkpoint,
               "train": data.train, "eval": data.eval, "warm_start": warm.lineage(),
               "tuned": storage.read_json(tuned.best) if tuned.best else {}}
    out = PackageOutput(package=storage.join(ctx.output_uri, "package"))
    with tempfile.TemporaryDirectory() as tmp:
        local = write_package(Path(tmp) / "package", model=module, model_config=model, preprocessor=preprocessor,
                              users=pd.read_parquet(data.users), items=pd.read_parquet(data.items), lineage=lineage,
                              statistics=stats.train)
        storage.upload_dir(local, out.package)
    return out


@step()
def evaluate(ctx: StepContext, data: TransformOutput, packaged: PackageOutput) -> EvaluateOutput:
    from mlsys.evaluate.evaluation import evaluate_package

    metrics = evaluate_package(packaged.package, data.eval)
    out = EvaluateOutput(metrics=storage.join(ctx.output_uri, "metrics.json"))
    storage.write_json(out.metrics, metrics)
    ctx.log_metrics({f"eval_{k}": v for k, v in metrics.items()})
    return out


@step()
def register(ctx: StepContext, packaged: PackageOutput, evaluation: EvaluateOutput, registry: RegistryConfig, warm: WarmStart) -> RegisterOutput:
    """A new version in the registry; it serves only once the gate blesses it and ``push`` moves the alias."""
    from mlsys.registry import mlflow_store
    from mlsys.registry.mlflow_store import Tag

    metrics = storage.read_json(evaluation.metrics)
    tags = {Tag.FINGERPRINT: ctx.fingerprint, **{f"eval_{k}": round(v, 6) for k, v in metrics.items()}}
    if warm.active:
        tags[Tag.WARM_START] = f"{warm.model_name}/{warm.version}" if warm.version else warm.package
    version = mlflow_store.register(ctx.tracking_uri, ctx.run_id, packaged.package, registry.model_name, None, tags)
    ctx.log_metric("model_version", int(version.version))
    return RegisterOutput(package=version.source, model_name=version.name, version=version.version)


@step()
def bless(
    ctx: StepContext, data: TransformOutput, registered: RegisterOutput, evaluate: EvaluateConfig, registry: RegistryConfig,
    features: FeaturesConfig, serve: ServeConfig,
) -> BlessOutput:
    """The candidate against the champion on the same eval data, overall and per slice; the blessing;
    the pre-release replay of logged requests. Runs whenever a new version is registered."""
    from mlsys.evaluate.gate import run_gate

    out = BlessOutput(*(storage.join(ctx.output_uri, n) for n in ("evaluation.json", "blessing.json", "estimate.json", "report.html")))
    gate = run_gate(ctx.tracking_uri, registered.model_name, registered.version, registered.package, registry.alias,
                    data.train, data.eval, evaluate, replay_log=logged_requests(features, serve, ctx.home), uris=out,
                    title=f"Evaluation of {registered.model_name} version {registered.version}")
    ctx.log_metrics(gate.metrics)
    ctx.set_tag("blessed", str(gate.decision.blessed).lower())
    from mlsys.registry import mlflow_store

    mlflow_store.client(ctx.tracking_uri).log_artifact(ctx.run_id, out.report, "evaluation")
    print(f"[bless] {registered.model_name} version {registered.version}: {gate.decision.reason}")
    if gate.estimate is not None:
        print(f"[bless] pre-release estimate: {gate.estimate.line()}")
    return out


@step()
def push(ctx: StepContext, data: TransformOutput, registered: RegisterOutput, blessed: BlessOutput, evaluate: EvaluateConfig,
         registry: RegistryConfig, serve: ServeConfig) -> PushOutput:
    """Infra validation in a sandbox app, then ``registry.alias`` moves to the version (apps following it hot reload)."""
    from mlsys.evaluate.gate import read_gate
    from mlsys.serve.push import push_if_ready

    out = PushOutput(decision=storage.join(ctx.output_uri, "push.json"))
    decision, estimate = read_gate(blessed.blessing, blessed.estimate)
    outcome = push_if_ready(ctx.tracking_uri, registered.model_name, registered.version, registered.package, registry.alias,
                            data.eval, decision, estimate, evaluate, serve, via=f"push step (MLflow run {ctx.run_id})")
    storage.write_json(out.decision, outcome)
    ctx.set_tag("pushed", str(outcome["pushed"]).lower())
    print(f"[push] {registered.model_name} version {registered.version}: {outcome['line']}")
    return out


def logged_requests(features: FeaturesConfig, serve: ServeConfig, home: str):
    """What serving logged (``serve.feature_logging.path``, else beside the feature store), or None."""
    from pathlib import Path

    from mlsys.features.feature_log import default_log_dir, read_feature_log

    where = serve.feature_logging.path or default_log_dir(features.project, home)
    return read_feature_log(where) if where and Path(where).exists() else None


CTR = Pipeline("ctr", (ingest, statistics, schema, validate, features, materialize, transform, tune, train, package, evaluate, register, bless, push))
PIPELINES = {"ctr": CTR}
