"""Bring your own data: a declared feature schema drives the pipeline end to end, served over HTTP.

Two data sets that are not MovieLens: a click log with its own column names, kinds and a
multi-hot column declared on the command line, and the Instacart sample (``data=instacart``).
Each trains, registers and answers ``/v1/rank`` with its request context; the served scores
equal the in-process model's.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests

import mlsys
from mlsys.api import serving as commands
from mlsys.api.config import compose_config
from tests.conftest import MLSYS, REPO

sys.path.insert(0, str(REPO / "scripts"))
from example_click_log import TAGS, write_click_log  # noqa: E402  (the example docs/data.md walks through)


@pytest.fixture(scope="module")
def own(ray_local, tmp_path_factory, serve_port):
    folder = tmp_path_factory.mktemp("own")
    overrides = [f"home.root={folder / 'home'}", *write_click_log(folder), "train.max_epochs=2", "model=din"]
    result = mlsys.run_pipeline(overrides)
    yield from _served(overrides, result, folder / "home", serve_port, "own")


@pytest.fixture(scope="module")
def instacart(ray_local, tmp_path_factory, serve_port):
    home = tmp_path_factory.mktemp("instacart")
    overrides = [f"home.root={home}", "data=instacart", "train.max_epochs=1"]
    result = mlsys.run_pipeline(overrides)
    yield from _served(overrides, result, home, serve_port, "instacart")


def _served(overrides, result, home, port, name):
    """The home's ctr/1 as app ``name`` at /``name`` of the session's Serve (both of the module's apps
    live until its end)."""
    from ray import serve

    cfg = compose_config([*overrides, f"serve.port={port}", "serve.model=ctr/1", f"serve.app_name={name}", f"serve.route_prefix=/{name}"])
    url = commands.start_server(cfg)
    yield url, result, mlsys.load_model("models:/ctr/1", tracking_uri=f"sqlite:///{home}/mlflow.db")
    serve.delete(cfg.serve.app_name)


def _requests(result, context_columns, n_users=4):
    """(user, candidates, context) from held-out events: each user's first eval event's context."""
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id", *context_columns])
    for user, group in list(frame.groupby("user_id"))[:n_users]:
        first = group.iloc[0]
        context = {c: (list(first[c]) if isinstance(first[c], (list, np.ndarray)) else first[c]) for c in context_columns}
        context = {c: v.item() if isinstance(v, np.generic) else v for c, v in context.items()}  # JSON-ready
        context = {c: (None if isinstance(v, float) and np.isnan(v) else v) for c, v in context.items()}
        yield int(user), [int(i) for i in group["item_id"].head(12)], context


def _check_served_equals_offline(url, model, result, context_columns):
    for user, candidates, context in _requests(result, context_columns):
        answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "context": context}, timeout=30)
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        expected = model.rank(user, candidates, context=context)
        assert [i["item_id"] for i in items] == [i.item_id for i in expected.items]
        np.testing.assert_allclose([i["score"] for i in items], [i.score for i in expected.items], atol=1e-5)


def test_own_columns_train_and_the_schema_reaches_the_model(own):
    _, result, model = own
    schema = model.package.preprocessor.schema
    assert schema.categorical == ("user_id", "item_id", "device", "segment", "brand")
    assert schema.numeric == ("price",) and schema.multi_hot == ("tags",) and schema.context == ("device", "price", "tags")
    spec = model.package.spec
    assert spec.categorical_fields == schema.categorical and spec.multi_hot_fields == ("tags",) and spec.numeric_fields == ("price",)
    assert set(model.package.preprocessor.vocabularies_["tags"]) == set(TAGS)
    assert set(model.package.preprocessor.vocabularies_["brand"]) == {"acme", "globex", "initech"}
    train = pd.read_parquet(result.output("transform").train)
    assert {"user_id", "item_id", "timestamp", "label", "device", "price", "tags", "segment", "brand", "history"} <= set(train.columns)
    evaluated = pd.read_json(result.output("evaluate").metrics, typ="series")
    assert evaluated["auc"] > 0.6, evaluated  # the planted signal is learnt from the declared features


def test_own_columns_rank_over_http_with_request_context(own):
    url, result, model = own
    before = requests.get(f"{url}/v1/metrics", timeout=10).json()["user_cache"]
    _check_served_equals_offline(url, model, result, ["device", "price", "tags"])  # DIN: served through its user side
    _check_served_equals_offline(url, model, result, ["device", "price", "tags"])  # the same users again: cached
    after = requests.get(f"{url}/v1/metrics", timeout=10).json()["user_cache"]
    assert after["misses"] - before["misses"] == 4 and after["hits"] - before["hits"] == 4, (before, after)
    user, candidates, _ = next(_requests(result, []))
    # The context changes the scores (phones like sale items), and is validated against the schema.
    web = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "context": {"device": "web"}}, timeout=30).json()
    ios = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "context": {"device": "ios"}}, timeout=30).json()
    assert {i["item_id"]: i["score"] for i in web["items"]} != {i["item_id"]: i["score"] for i in ios["items"]}
    bad = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "context": {"colour": "red"}}, timeout=30)
    assert bad.status_code == 400 and "'colour'" in bad.json()["detail"] and "device" in bad.json()["detail"]
    bad = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "context": {"price": "cheap"}}, timeout=30)
    assert bad.status_code == 400 and "context.price must be a finite number" in bad.json()["detail"]


def test_instacart_trains_registers_and_ranks_over_http(instacart):
    url, result, model = instacart
    schema = model.package.preprocessor.schema
    assert schema.sources == {"user_id": "user_id", "item_id": "product_id", "timestamp": "order_number", "label": "reordered"}
    assert schema.context == ("order_dow", "order_hour_of_day", "days_since_prior_order", "add_to_cart_order")
    ingest = pd.read_parquet(result.output("ingest").events, columns=["user_id", "item_id"])
    assert len(ingest) == 150_000 and ingest.user_id.nunique() == 593 and ingest.item_id.nunique() == 14_190
    evaluated = pd.read_json(result.output("evaluate").metrics, typ="series")
    assert evaluated["auc"] > 0.7, evaluated  # earlier products predict reorders
    _check_served_equals_offline(url, model, result, list(schema.context))


def test_a_missing_column_is_one_line_naming_its_setting(tmp_path):
    overrides = [*write_click_log(tmp_path), "data.columns.user=customer", f"home.root={tmp_path / 'home'}", "pipeline.until=ingest"]
    proc = subprocess.run([MLSYS, "run", *overrides], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlsys: error:")]
    assert len(errors) == 1 and "data.columns.user names the column 'customer', but the header of" in errors[0], proc.stderr[-2000:]
    assert "set data.columns.user to one of them" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("replace, override, says", [
    (None, "data.features.numeric=[weight]", "data.features.numeric names the column 'weight', but the header of"),
    (None, "data.item_table.categorical=[colour]", "data.item_table.categorical names the column 'colour', but"),
    (None, "data.item_table.key=sku", "has no key column 'sku' (the columns ['product', 'brand']); set data.item_table.key"),
    ("data.item_table.categorical", "data.item_table.numeric=[brand]",
     "column 'brand' is declared numeric (data.item_table.numeric) but holds 'acme'"),
    ("data.user_table.path", "data.user_table.path=/nowhere/users.parquet", "data.user_table.path='/nowhere/users.parquet': no such file"),
    ("data.path", "data.path=/nowhere/clicks.csv", "data.path='/nowhere/clicks.csv': no such file"),
])
def test_a_declared_column_the_data_lacks_is_named_with_its_setting(tmp_path, replace, override, says):
    from mlsys.data.ingest import read_source
    from mlsys.errors import DataFormatError

    overrides = [o for o in write_click_log(tmp_path) if not (replace and o.startswith(replace + "="))]
    with pytest.raises(DataFormatError) as e:
        read_source(compose_config([*overrides, override]).data)
    assert says in str(e.value)


def test_a_given_behaviour_sequence_is_used_as_it_is(tmp_path):
    """data.history_column: each event's sequence comes from the file, not derived; serving gets the last one."""
    from mlsys.data.executor import LocalExecutor
    from mlsys.data.ingest import ingest
    from mlsys.data.transform import TransformUris, transform

    rows = ["uid,sku,ts,clicked,prev", "1,10,100,1,", "1,11,200,0,10", "1,12,300,1,10|11", "1,13,400,0,7|10|12",
            "2,10,100,0,", "2,12,200,1,5", "2,11,300,1,5|12", "2,13,400,1,5|12|11", "2,14,500,0,12|11|13"]
    (tmp_path / "clicks.csv").write_text("\n".join(rows) + "\n")
    cfg = compose_config(["data=csv", f"data.path={tmp_path / 'clicks.csv'}", "data.columns.user=uid", "data.columns.item=sku",
                          "data.columns.timestamp=ts", "data.columns.label=clicked", "data.history_column=prev",
                          "data.vocab_min_count=1"]).data
    d = str(tmp_path)
    ingest(cfg, f"{d}/events", f"{d}/users.parquet", f"{d}/items.parquet", f"{d}/q", executor=LocalExecutor())
    out = TransformUris(f"{d}/train", f"{d}/eval", f"{d}/pre.json", f"{d}/u.parquet", f"{d}/i.parquet")
    transform(cfg, f"{d}/events", f"{d}/users.parquet", f"{d}/items.parquet", out, executor=LocalExecutor())
    both = pd.concat([pd.read_parquet(out.train), pd.read_parquet(out.eval)]).sort_values(["user_id", "timestamp"])
    given = [[int(x) for x in r.split(",")[4].split("|") if x] for r in rows[1:]]
    assert [list(h) for h in both["history"]] == given  # not the derived clicks (user 1's last would be [10, 12])
    latest = pd.read_parquet(out.users).set_index("user_id")["history"]
    assert list(latest[1]) == [7, 10, 12] and list(latest[2]) == [12, 11, 13]
