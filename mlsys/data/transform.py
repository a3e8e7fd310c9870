"""Transform: behaviour sequences per event, the preprocessor fitted on the train split,
and the serving tables (users with their latest history, items).

One pass over the events, a task per file (each file holds whole users, see
:mod:`mlsys.data.splits`): sequences, the train/eval files, the preprocessor's
partial statistics of the train rows and each user's latest clicks, with no
shuffle. The same functions run in-process or on Ray Data (:mod:`mlsys.data.executor`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from mlsys import storage
from mlsys.data import events as ev
from mlsys.data import splits
from mlsys.data.config import DataConfig
from mlsys.data.executor import Executor, ExecutorKind, executor_for
from mlsys.data.feature_schema import HISTORY, ITEM, LABEL, TIME, USER, FeatureSchema
from mlsys.data.preprocessor import CtrPreprocessor, merge_stats


@dataclass(frozen=True)
class TransformUris:
    train: str
    eval: str
    preprocessor: str
    users: str
    items: str


@dataclass(frozen=True)
class TransformResult:
    preprocessor: CtrPreprocessor
    executor: ExecutorKind


def transform(
    cfg: DataConfig,
    events_uri: str,
    users_uri: str,
    items_uri: str,
    out: TransformUris,
    training_set_uri: str = "",
    numeric: tuple[str, ...] | None = None,
    base: CtrPreprocessor | None = None,
    executor: Executor | None = None,
) -> TransformResult:
    """Write the train/eval splits with histories, the fitted preprocessor and the serving tables.

    ``training_set_uri``: a point-in-time training set from the feature store, used instead of
    deriving histories here; ``numeric``: the numeric model inputs; ``base``: the preprocessor of
    the model a warm start continues (old ids keep their indices); ``executor``: chosen by the
    input's rows (Parquet footers) unless given.
    """
    events = splits.part_files(storage.absolute(events_uri))
    labelled = splits.part_files(storage.absolute(training_set_uri)) if training_set_uri else events
    executor = executor or executor_for(cfg, splits.parquet_rows(labelled))
    schema = FeatureSchema.of(cfg)
    preprocessor = CtrPreprocessor(schema, cfg.vocab_min_count, numeric)
    if base is not None:
        preprocessor.continuing(base)
    write = {"train": storage.absolute(out.train), "eval": storage.absolute(out.eval)}
    sequence = {"length": cfg.history_length, "every_event": schema.history_of.value == "events",
                "given": schema.history_column is not None}
    parts = executor.generate(len(labelled), _transform_file, files=labelled, out=write, preprocessor=preprocessor,
                              histories=not training_set_uri, **sequence).collect()
    if training_set_uri:  # the latest histories still come from the events
        latest = executor.generate(len(events), _latest_items_file, files=events, **sequence).collect()
    else:
        latest = pa.concat_tables([_ipc_table(b) for b in parts.column("latest").to_pylist()])
    parts = parts.take(np.argsort(parts.column("index").to_numpy(), kind="stable"))  # merge in file order
    stats = [json.loads(s) for s in parts.column("stats").to_pylist()]
    preprocessor.fit_partials(stats)
    preprocessor.save(out.preprocessor)
    # The serving tables know every user and item of the data, with or without a row in a side table.
    users = pd.read_parquet(users_uri).merge(latest.to_pandas(), on=USER, how="outer")
    users[HISTORY] = [list(h) if h is not None and not (isinstance(h, float) and np.isnan(h)) else [] for h in users[HISTORY]]
    storage.write_table(users, out.users)
    items = pd.read_parquet(items_uri)
    trained = pd.DataFrame({ITEM: np.array(sorted(merge_stats(stats)["counts"][ITEM]), dtype=np.int64)})
    storage.write_table(items.merge(trained, on=ITEM, how="outer") if len(trained) else items, out.items)
    return TransformResult(preprocessor, executor.kind)


def _ipc(table: pa.Table) -> bytes:
    """A small table as Arrow IPC bytes: transport between our own tasks, no pickle."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _transform_file(index: int, files: list[str], out: dict[str, str], preprocessor: CtrPreprocessor, histories: bool,
                    length: int, every_event: bool, given: bool) -> pa.Table:
    """File ``index``: with ``histories``, its events' behaviour sequences derived (unless ``given`` in the
    events) and its train and eval files written; returns the preprocessor's partial statistics of its
    train rows and (with histories) its users' latest sequences."""
    table = splits.read_part(files[index]).replace_schema_metadata(None)
    if histories and not given:
        table = ev.history_table(table, length, every_event)
    rows = {split: splits.split_rows(table, split) for split in out}
    for split, uri in out.items():
        splits.write_part(rows[split], splits.part_file(uri, index))
    stats = json.dumps(preprocessor.partial_stats(rows["train"]))
    if histories:
        latest = _ipc(ev.latest_given_table(table) if given else ev.last_clicks_table(table, length, every_event))
    else:
        latest = b""
    return pa.table({"index": [index], "stats": [stats], "latest": [latest]})


def _latest_items_file(index: int, files: list[str], length: int, every_event: bool, given: bool) -> pa.Table:
    if given:
        return ev.latest_given_table(splits.read_part(files[index], columns=[USER, ITEM, TIME, HISTORY]))
    return ev.last_clicks_table(splits.read_part(files[index], columns=[USER, ITEM, TIME, LABEL]), length, every_event)
