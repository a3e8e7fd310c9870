"""Batch prediction (``mlsys predict``): a registered model scores a Parquet/CSV file of (user, item) rows on Ray Data.

>>> from mlsys.api.config import compose_config
>>> cfg = compose_config(["predict.input=rows.parquet", "predict.output=scores"])   # doctest: +SKIP
>>> predict(cfg).rows                                                            # doctest: +SKIP
10000000
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mlsys.api.config import MlsysConfig


def resolve_package(cfg: MlsysConfig) -> tuple[str, str]:
    """``predict.model`` as (package URI, a name for messages): a package folder, or a registered model."""
    from mlsys.registry import mlflow_store

    ref = cfg.predict.model
    if (Path(ref) / "manifest.json").exists():
        return str(Path(ref).resolve()), ref
    model = mlflow_store.resolve(mlflow_store.tracking_uri(cfg.home), ref)
    return model.source, f"{model.name} version {model.version}"


def predict(cfg: MlsysConfig, echo: Callable[[str], None] = print):
    """Score ``predict.input`` with ``predict.model`` into ``predict.output``; returns a
    :class:`~mlsys.serve.batch.PredictResult`. Every check that needs no Ray runs first: the flags,
    the model, the input's columns against the model's schema."""
    from mlsys import storage
    from mlsys.cluster import connect
    from mlsys.errors import ConfigError, OutputExistsError
    from mlsys.registry.package import read_package
    from mlsys.serve import batch
    from mlsys.serve.predict import input_columns

    p = cfg.predict
    if not p.input:
        raise ConfigError("predict.input is not set: pass --input PATH (a Parquet file or folder, or a CSV file)")
    if not p.output:
        raise ConfigError("predict.output is not set: pass --output PATH (a folder for the scored Parquet files)")
    if storage.exists(p.output) and not p.overwrite:
        raise OutputExistsError("--output", p.output, "predict.overwrite")
    package_uri, name = resolve_package(cfg)
    plan = batch.plan_input(p.input, p.batch_size)
    schema = read_package(package_uri).preprocessor.schema
    columns = input_columns(schema, plan.types, f"--input {p.input}")
    echo(f"[predict] {name}: ids from columns {columns.user!r}, {columns.item!r}"
         + (f"; context {list(columns.context)}" if columns.context else ""))
    if columns.missing:
        echo(f"[predict] the input has no column for the context feature(s) {list(columns.missing)}: "
             "every row scores them as missing (as a /v1/rank request without them)")
    if p.overwrite:
        storage.remove(p.output)
    connect(cfg.cluster)
    result = batch.predict(p, package_uri, plan, local=cfg.cluster.address == "local", echo=echo)
    line = (f"[predict] scored {result.rows - result.summary.bad:,} of {result.rows:,} rows in {result.seconds:.1f}s "
            f"({result.rows / max(result.seconds, 1e-9):,.0f} rows/s) to {result.output}")
    if result.summary.bad:
        line += f"; {result.summary.bad:,} bad row(s) in {result.quarantine}/bad_rows.parquet"
    if result.unknown_user_rows or result.unknown_item_rows:
        line += (f"; {result.unknown_user_rows:,} rows of unknown users, {result.unknown_item_rows:,} of unknown items "
                 "(scored with default features)")
    echo(line)
    if p.stats:
        echo(result.stats)
    return result
