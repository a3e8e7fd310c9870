"""Ingest, statistics and transform in-process (LocalExecutor, no Ray cluster), against pandas oracles
written independently of the block functions: a merge, a per-user sort, per-user groupbys."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlsys.data import synthetic
from mlsys.data.feature_schema import FeatureSchema, Table
from tests.schemas import data_config
from mlsys.data.executor import LocalExecutor
from mlsys.data.ingest import ingest
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.data.splits import part_files, split_statistics
from mlsys.data.statistics import DatasetStatistics, compute_table, event_kinds
from mlsys.data.transform import TransformUris, transform

CFG = data_config("synthetic", "data.rows=6000", "data.users=80", "data.items=200", "data.blocks=3", "data.partition_rows=2000",
                  "data.history_length=5")
KEY = ["user_id", "timestamp", "item_id", "label"]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    uris = {n: str(d / n) for n in ("events", "users.parquet", "items.parquet", "quarantine")}
    ingested = ingest(CFG, *uris.values(), executor=LocalExecutor())
    stats = split_statistics(CFG, uris["events"], {"train": str(d / "train.json"), "eval": str(d / "eval.json")}, executor=LocalExecutor())
    out = TransformUris(str(d / "train"), str(d / "eval"), str(d / "pre.json"), str(d / "u.parquet"), str(d / "i.parquet"))
    transformed = transform(CFG, uris["events"], uris["users.parquet"], uris["items.parquet"], out, executor=LocalExecutor())
    return d, uris, ingested, stats, out, transformed


def _oracle_events() -> pd.DataFrame:
    events = pd.concat([synthetic.generate_block(CFG, b) for b in range(CFG.blocks)])
    schema = FeatureSchema.of(CFG)  # side tables keep the key and the declared features, in declared order
    users = synthetic.synthetic_users(CFG)[["user_id", *schema.table_features(Table.users)]]
    items = synthetic.synthetic_items(CFG)[["item_id", *schema.table_features(Table.items)]]
    joined = events.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
    joined = joined.sort_values(KEY, kind="stable")
    n = joined.groupby("user_id")["item_id"].transform("size").to_numpy()
    rank = joined.groupby("user_id").cumcount().to_numpy()
    return joined.assign(split=np.where(rank >= n - np.floor(n * CFG.eval_fraction), "eval", "train"))


def test_ingest_writes_a_file_of_whole_users_per_partition(steps):
    _, uris, ingested, _, _, _ = steps
    files = part_files(uris["events"])
    assert [f.rsplit("/", 1)[-1] for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    user_sets = [set(pq.read_table(f, columns=["user_id"]).column("user_id").to_pylist()) for f in files]
    assert sum(map(len, user_sets)) == len(set().union(*user_sets)) == CFG.users  # disjoint, every user
    for f in files:
        t = pq.read_table(f).to_pandas()
        assert t[KEY].equals(t.sort_values(KEY, kind="stable")[KEY].reset_index(drop=True))  # event order
    assert ingested.executor.value == "local"
    assert ingested.metrics["rows_read"] == CFG.rows and ingested.metrics["bad_rows"] == 0


def test_ingested_events_equal_a_pandas_merge_and_per_user_split(steps):
    _, uris, ingested, _, _, _ = steps
    got = pd.read_parquet(uris["events"]).sort_values(KEY, kind="stable").reset_index(drop=True)
    expected = _oracle_events().reset_index(drop=True)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got.drop(columns="genres"), expected.drop(columns="genres"), check_dtype=False)
    assert [list(g) for g in got.genres] == list(expected.genres)
    train = expected[expected.split == "train"]
    assert ingested.metrics["train_rows"] == len(train)
    assert ingested.metrics["train_click_rate"] == pytest.approx(train.label.mean())


def test_statistics_equal_those_of_each_split_as_one_block(steps):
    d, uris, _, stats, _, _ = steps
    events = pq.read_table(uris["events"])
    for split in ("train", "eval"):
        got = DatasetStatistics.from_json((d / f"{split}.json").read_text())
        rows = events.filter(events.column("split").to_numpy(zero_copy_only=False) == split)
        whole = compute_table(rows, event_kinds(events.schema))
        assert got.rows == rows.num_rows == stats.rows[f"{split}_rows"]
        for name, f in whole.features.items():
            g = got.features[name]
            assert (g.count, g.missing, g.min, g.max, g.zeros) == (f.count, f.missing, f.min, f.max, f.zeros), name
            if f.mean is not None:
                assert math.isclose(g.mean, f.mean, rel_tol=1e-12) and math.isclose(g.std, f.std, rel_tol=1e-9), name
            if f.top is not None:
                assert g.top == f.top, name  # exact: few distinct values per block


def test_transform_histories_equal_per_user_strictly_earlier_clicks(steps):
    _, uris, _, _, out, _ = steps
    events = pd.read_parquet(uris["events"])
    train = pd.read_parquet(out.train)
    evaluation = pd.read_parquet(out.eval)
    assert len(train) + len(evaluation) == len(events) and set(evaluation.split) == {"eval"}
    both = pd.concat([train, evaluation])
    for user, rows in both.groupby("user_id"):
        clicks = events[(events.user_id == user) & (events.label > 0)].sort_values(["timestamp", "item_id"])
        for ts, history in zip(rows.timestamp, rows.history):
            assert list(history) == clicks[clicks.timestamp < ts].item_id.tolist()[-CFG.history_length :]


def test_transform_fits_the_preprocessor_on_the_train_rows_and_snapshots_latest_clicks(steps):
    _, _, _, _, out, transformed = steps
    train = pd.read_parquet(out.train)
    expected = CtrPreprocessor(FeatureSchema.of(CFG), CFG.vocab_min_count).fit_frame(train)
    assert json.loads(transformed.preprocessor.to_json()) == json.loads(expected.to_json())
    assert json.loads(open(out.preprocessor).read()) == json.loads(expected.to_json())
    users = pd.read_parquet(out.users).set_index("user_id")
    both = pd.concat([train, pd.read_parquet(out.eval)])
    for user, rows in both.groupby("user_id"):
        clicks = rows[rows.label > 0].sort_values(["timestamp", "item_id"]).item_id.tolist()
        assert list(users.loc[user, "history"]) == clicks[-CFG.history_length :]
    assert transformed.executor.value == "local"
