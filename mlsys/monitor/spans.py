"""Offline sample monitoring: every ingested span's statistics as a series, from the registry of runs.

Each run of the pipeline's ``statistics`` step (a new span, new data) wrote the statistics of its
splits; its MLflow run names them (``mlsys.outputs``) and records its config (``data.span``,
``data.source``, ...). :func:`span_series` reads them back in the order they were computed, so a
feature's mean, missing rate or top values can be followed across spans:

    for point in span_series(tracking_uri, "gender"):
        print(point.span, point.rows, point.missing_rate, point.top[:3])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from mlsys import storage
from mlsys.data.statistics import DatasetStatistics
from mlsys.registry import mlflow_store
from mlsys.registry.mlflow_store import Tag


@dataclass(frozen=True)
class SpanPoint:
    run_id: str
    at: float  # when the statistics step ran (epoch s)
    span: str  # the run's data.span ("" when the data set has none)
    source: str  # data.source
    rows: int
    count: int
    missing_rate: float
    mean: Optional[float]
    std: Optional[float]
    quantiles: Optional[dict]
    top: Optional[list]  # [[value, share of present rows], ...] for a categorical feature


def span_series(tracking_uri: str, feature: str, split: str = "train", experiment: Optional[str] = None) -> list[SpanPoint]:
    """One point per statistics step that ran (cached reuses are the same data: left out), oldest first;
    a run whose statistics lack ``feature`` is left out."""
    client = mlflow_store.client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments() if experiment is None or e.name == experiment]
    runs = client.search_runs(experiments, f"tags.`{Tag.STEP}` = 'statistics' and tags.`{Tag.CACHED}` = 'false'",
                              max_results=10000, order_by=["attributes.start_time ASC"])
    points = []
    for run in runs:
        uri = json.loads(run.data.tags.get(Tag.OUTPUTS, "{}")).get(split)
        if not uri or not storage.exists(uri):
            continue
        stats = DatasetStatistics.from_json(storage.read_text(uri))
        f = stats.features.get(feature)
        if f is None:
            continue
        present = max(f.present, 1)
        top = [[value, count / present] for value, count in f.top] if f.top is not None else None
        points.append(SpanPoint(run.info.run_id, run.info.start_time / 1000, run.data.params.get("data.span", ""),
                                run.data.params.get("data.source", ""), stats.rows, f.count,
                                f.missing / f.count if f.count else 0.0, f.mean, f.std, f.quantiles, top))
    return points
