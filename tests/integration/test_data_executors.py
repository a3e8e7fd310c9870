"""Ingest, statistics and transform give the same outputs in-process and on Ray Data (real Ray).

Compared: every Parquet output (rows sorted by every sortable column, all columns, Arrow types),
the statistics JSON (exactly, except what comes from the KLL sketch, which draws random bits: its
quantiles and histogram within the sketch's rank error) and the preprocessor JSON (exactly).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import datasketches as ds
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys.data.config import DataConfig
from mlsys.data.datasets import RayExecutor
from mlsys.data.executor import LocalExecutor
from mlsys.data.ingest import ingest
from mlsys.data.splits import split_statistics
from mlsys.data.statistics import KLL_K
from mlsys.data.transform import TransformUris, transform
from tests.schemas import data_config

PARQUET = ["events", "quarantine", "users.parquet", "items.parquet", "train", "eval", "users_latest.parquet", "items_out.parquet"]


def _csv_with_bad_rows(path: Path) -> Path:
    """MovieLens lines as CSV with bad rows among them; the users table beside it, no items table (nulls)."""
    from mlsys.data.movielens import load_users, movielens_dir

    load_users(movielens_dir()).to_parquet(path.with_name("users.parquet"))
    lines = (movielens_dir() / "ml-100k.inter").read_text().splitlines()[1:3001]
    body = [",".join(line.split("\t")) for line in lines]
    bad = ["7,,881250949,4", "x1,242,881250949,3", "196,242,881250949", "196,242,3,-5"]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(body[:50] + bad + body[50:]) + "\n\n")
    return path


def _own_columns_csv(path: Path) -> Path:
    """A click log with its own column names and event features of every kind, and an item table."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 6000
    tags = ["sale", "new", "eco", "kids"]
    pd.DataFrame({
        "sku": rng.integers(1, 300, n), "uid": rng.integers(1, 200, n), "ts": rng.integers(1_000, 90_000, n),
        "clicked": rng.integers(0, 2, n), "device": rng.choice(["ios", "android", "web", ""], n),
        "price": np.where(rng.random(n) < 0.05, np.nan, rng.gamma(2.0, 10.0, n).round(2)),
        "tags": ["|".join(rng.choice(tags, rng.integers(0, 3), replace=False)) for _ in range(n)],
    }).to_csv(path, index=False)
    pd.DataFrame({"sku": np.arange(1, 250), "brand": rng.choice(["a", "b", "c"], 249)}).to_parquet(path.with_name("items.parquet"))
    return path


CASES = {
    "movielens": lambda tmp: data_config("movielens"),
    # Several partitions (files) of users, several generated blocks.
    "synthetic": lambda tmp: data_config("synthetic", "data.rows=30000", "data.users=300", "data.items=500", "data.blocks=4",
                                         "data.partition_rows=8000"),
    "csv with bad rows": lambda tmp: data_config(
        "csv", f"data.path={_csv_with_bad_rows(tmp / 'clicks.csv')}", "data.columns.rating=rating", "data.partition_rows=1000",
        f"data.user_table.path={tmp / 'users.parquet'}", "data.user_table.categorical=[gender,occupation]", "data.user_table.numeric=[age]"),
    "csv with its own columns": lambda tmp: data_config(
        "csv", f"data.path={_own_columns_csv(tmp / 'own.csv')}", "data.columns.user=uid", "data.columns.item=sku",
        "data.columns.timestamp=ts", "data.columns.label=clicked", "data.features.categorical=[device]",
        "data.features.numeric=[price]", "data.features.multi_hot=[tags]", "data.partition_rows=2000",
        f"data.item_table.path={tmp / 'items.parquet'}", "data.item_table.categorical=[brand]"),
}


def _steps(cfg: DataConfig, out: Path, executor) -> None:
    uris = [str(out / n) for n in ("events", "users.parquet", "items.parquet", "quarantine")]
    ingest(cfg, *uris, executor=executor)
    split_statistics(cfg, uris[0], {"train": str(out / "train.json"), "eval": str(out / "eval.json")}, executor=executor)
    written = TransformUris(*(str(out / n) for n in ("train", "eval", "preprocessor.json", "users_latest.parquet", "items_out.parquet")))
    transform(cfg, uris[0], uris[1], uris[2], written, executor=executor)


@pytest.fixture(scope="module", params=list(CASES))
def both(request, ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    cfg = CASES[request.param](root)
    _steps(cfg, root / "local", LocalExecutor())
    _steps(cfg, root / "ray", RayExecutor())
    return root / "local", root / "ray"


def _sorted(table: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_list(f.type) and not pa.types.is_null(f.type)]
    return table.sort_by(keys) if keys else table


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", PARQUET)
def test_parquet_outputs_are_identical(both, name):
    local, ray = (pq.read_table(str(d / name)) for d in both)
    assert local.num_rows > 0 or name not in ("events", "train", "eval")
    assert local.schema.remove_metadata() == ray.schema.remove_metadata()
    assert _sorted(local).equals(_sorted(ray))


def test_the_same_files_with_the_same_bytes(both):
    local, ray = both
    assert _files(local) == _files(ray)
    for name in _files(local):
        if name.endswith(".parquet") and name.split("/")[0] in ("events", "train", "eval"):
            assert (local / name).read_bytes() == (ray / name).read_bytes(), name  # partitions are canonical


def test_preprocessor_json_is_identical(both):
    local, ray = (json.loads((d / "preprocessor.json").read_text()) for d in both)
    assert local == ray and local["vocabularies"]["item_id"]


def _pop_kll(feature: dict) -> dict | None:
    """Remove and return what comes from a feature's KLL sketch: the sketch, its quantiles and histogram."""
    summary = feature.get("length", feature)  # list features: the KLL sketch is of their lengths
    if "quantiles" not in summary:
        return None
    return {"quantiles": summary.pop("quantiles"), "histogram": summary.pop("histogram"), "kll": feature["sketches"].pop("kll")}


def _assert_close_kll(a: dict, b: dict, n: int, where: str) -> None:
    """Two KLL sketches of the same ``n`` values agree within twice the sketch's normalized rank error."""
    eps = 2 * ds.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
    for mine, other in ((a, b), (b, a)):
        sketch = ds.kll_doubles_sketch.deserialize(base64.b64decode(mine["kll"]))
        for label, value in other["quantiles"].items():
            q = float(label[1:]) / 100
            assert sketch.get_rank(value, False) - eps <= q <= sketch.get_rank(value, True) + eps, (where, label, value)
    assert a["histogram"]["edges"] == b["histogram"]["edges"], where  # from the exact min and max
    for x, y in zip(a["histogram"]["counts"], b["histogram"]["counts"]):
        assert abs(x - y) <= eps * n + 1, (where, a["histogram"]["counts"], b["histogram"]["counts"])


@pytest.mark.parametrize("split", ["train", "eval"])
def test_statistics_json_is_identical_but_for_the_kll_sketch(both, split):
    local, ray = (json.loads((d / f"{split}.json").read_text()) for d in both)
    assert local["rows"] == ray["rows"] > 0
    assert local["features"].keys() == ray["features"].keys()
    for name, a in local["features"].items():
        b = ray["features"][name]
        kll_a, kll_b = _pop_kll(a), _pop_kll(b)
        assert (kll_a is None) == (kll_b is None), name
        if kll_a is not None:
            _assert_close_kll(kll_a, kll_b, a["count"], f"{split}/{name}")
        assert a == b, name  # counts, moments, min/max, zeros, distinct counts, top values, HLL and frequent-items sketches


def _executor_tags(home: Path, result) -> dict[str, str]:
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store

    client = mlflow_store.client(mlflow_store.tracking_uri(HomeConfig(root=str(home))))
    return {s.name: client.get_run(s.run_id).data.tags.get("mlsys.executor") for s in result.steps}


def test_the_pipeline_records_the_in_process_executor_on_movielens(trained):
    home, _, result = trained
    tags = _executor_tags(home, result)
    assert (tags["ingest"], tags["statistics"], tags["transform"]) == ("local", "local", "local")
    assert tags["train"] is None  # only the data steps choose an executor


def test_local_max_rows_zero_runs_the_data_steps_on_ray_data(tmp_path, ray_local):
    import mlsys

    overrides = [f"home.root={tmp_path}", "data=synthetic", "data.rows=3000", "data.users=50", "data.items=100",
                 "data.blocks=2", "data.local_max_rows=0", "pipeline.until=statistics"]
    result = mlsys.run_pipeline(overrides)
    assert _executor_tags(tmp_path, result) == {"ingest": "ray", "statistics": "ray"}
