"""Ingestion: read a source, quarantine malformed rows with their reasons, split each
user's events into train and eval, and write the events and attribute tables."""

from __future__ import annotations

import pandas as pd

from mlsys import storage
from mlsys.data.config import DataConfig
from mlsys.data.parsing import BAD_COLUMNS, QuarantineSummary
from mlsys.errors import TooManyBadRowsError


def ingest(cfg: DataConfig, events_uri: str, users_uri: str, items_uri: str, quarantine_uri: str) -> dict[str, float]:
    """Write the labelled, split events (a Parquet dataset) and the user and item tables; returns metrics.

    Stops with :class:`~mlsys.errors.TooManyBadRowsError` above ``data.max_bad_fraction`` bad rows.
    """
    from ray.data.aggregate import Count, Sum

    from mlsys.data import datasets

    source = datasets.read_source(cfg)
    metrics = quarantine(source, cfg, quarantine_uri)
    events = datasets.split_by_user(source.events, cfg.eval_fraction).materialize()
    events.write_parquet(events_uri)
    storage.write_table(source.users, users_uri)
    storage.write_table(source.items, items_uri)
    counts = events.groupby("split").aggregate(Count(alias_name="rows"), Sum("label", alias_name="clicks")).to_pandas()
    for row in counts.itertuples():
        metrics.update({f"{row.split}_rows": row.rows, f"{row.split}_click_rate": row.clicks / row.rows})
    return metrics


def quarantine(source, cfg: DataConfig, uri: str) -> dict[str, float]:
    """Write malformed rows with their reasons to ``uri``; stop above ``data.max_bad_fraction``."""
    bad = source.bad_rows.to_pandas() if source.bad_rows is not None else pd.DataFrame()
    bad = bad.reindex(columns=list(BAD_COLUMNS))  # an empty Dataset converts without columns
    summary = QuarantineSummary.of(source.events.count(), bad)
    # Always written, empty or not: readers (and the step cache) can rely on it.
    storage.write_table(bad.astype({"line_number": "int64", "raw": str, "reason": str, "detail": str}),
                        storage.join(uri, "bad_rows.parquet"))
    if summary.bad:
        print(f"[ingest] quarantined {summary.bad} malformed row(s) of {summary.rows} ({summary.by_reason}) to {uri}")
    if summary.bad_fraction > cfg.max_bad_fraction:
        source_name = cfg.path or str(cfg.source.value)
        raise TooManyBadRowsError(source_name, summary.bad, summary.rows, cfg.max_bad_fraction, summary.by_reason, uri)
    return {"rows_read": summary.rows, "bad_rows": summary.bad, **{f"bad_rows_{r}": n for r, n in summary.by_reason.items()}}
