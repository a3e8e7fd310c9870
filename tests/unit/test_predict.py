"""Batch prediction's core without Ray (mlsys.serve.predict, the Ray-free parts of mlsys.serve.batch) on a
tiny real package whose schema has context features of every kind. The oracle is the serving path:
``RankingModel.rank`` of one candidate with that row's context."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
from mlsys.data.ingest import BAD_SCHEMA
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ConfigError, DataFormatError, TooManyBadRowsError
from mlsys.models import ModelConfig
from mlsys.models.zoo import build_model
from mlsys.registry.package import read_package, write_package
from mlsys.serve import batch
from mlsys.serve.predict import ROW_ID, SCORE, BatchPredictor, check_bad_fraction, input_columns
from mlsys.serve.predict_config import PredictConfig
from mlsys.serve.ranker import RankingModel
from tests.schemas import movielens_like

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

SCHEMA = FeatureSchema(
    features=(*movielens_like().features, Feature("device", Kind.categorical, Table.events),
              Feature("price", Kind.numeric, Table.events), Feature("tags", Kind.multi_hot, Table.events)),
    sources={"user_id": "uid", "item_id": "sku", "timestamp": "ts", "rating": "rating"},
    history_length=3, multi_hot_length=2,
)
USERS = pd.DataFrame({"user_id": np.arange(1, 6, dtype=np.int64), "age": [20.0, 31.0, 45.0, np.nan, 60.0],
                      "gender": ["F", "M", "F", "M", "F"], "occupation": ["a", "b", "c", "a", "b"],
                      "history": [[1, 2], [3], [], [4, 5, 6, 7], [8]]})
ITEMS = pd.DataFrame({"item_id": np.arange(1, 11, dtype=np.int64), "year": np.arange(1990, 2000).astype(np.float32),
                      "genres": [["g1"], ["g2", "g3"], ["g3"], ["g1", "g2"], [], ["g2"], ["g1"], ["g3"], ["g2"], ["g1", "g3"]]})


def _train_frame(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    user, item = rng.integers(1, 6, n), rng.integers(1, 11, n)
    u, i = USERS.set_index("user_id").loc[user], ITEMS.set_index("item_id").loc[item]
    return pd.DataFrame({
        "user_id": user, "item_id": item, "gender": u["gender"].to_numpy(), "occupation": u["occupation"].to_numpy(),
        "age": u["age"].to_numpy(), "year": i["year"].to_numpy(dtype=np.float64), "genres": list(i["genres"]),
        "device": rng.choice(["ios", "android", "web"], n), "price": rng.uniform(1, 50, n),
        "tags": [list(rng.choice(["sale", "new", "hot"], rng.integers(0, 3), replace=False)) for _ in range(n)],
        "history": [list(rng.integers(1, 11, rng.integers(0, 4))) for _ in range(n)],
        "label": rng.integers(0, 2, n).astype(np.float32),
    })


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pre = CtrPreprocessor(SCHEMA, min_count=1).fit_frame(_train_frame())
    torch.manual_seed(0)
    model = build_model(pre.input_spec(), ModelConfig(embed_dim=4, mlp_dims=[8]))
    with torch.no_grad():  # spread the weights so rows get clearly different scores
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    directory = tmp_path_factory.mktemp("pkg") / "package"
    write_package(directory, model=model.eval(), model_config=ModelConfig(embed_dim=4, mlp_dims=[8]), preprocessor=pre,
                  users=USERS, items=ITEMS, lineage={})
    return read_package(str(directory))


@pytest.fixture(scope="module")
def predictor(package):
    return BatchPredictor(package)


@pytest.fixture(scope="module")
def ranker(package):
    return RankingModel(package)


ROWS = pd.DataFrame({
    "user_id": [1, 1, 2, 3, 5, 99, 4, 2],  # 99: an unknown user
    "item_id": [1, 2, 2, 7, 10, 3, 1234, 5],  # 1234: an unknown item
    "device": ["ios", "web", None, "android", "ios", "web", "tv", "ios"],  # None: missing; "tv": out of vocabulary
    "price": [3.5, 12.0, None, 40.0, 1.0, 7.0, 2.0, 25.0],
    "tags": [["sale"], [], ["new", "hot"], None, ["sale", "new"], ["hot"], [], ["sale"]],
})


def _context(row) -> dict:
    out = {"device": row.device, "price": None if pd.isna(row.price) else float(row.price), "tags": row.tags}
    return {k: v for k, v in out.items() if v is not None}


def _rank_scores(ranker, rows: pd.DataFrame) -> np.ndarray:
    return np.array([ranker.rank(int(r.user_id), [int(r.item_id)], context=_context(r)).items[0].score
                     for r in rows.itertuples()])


def test_scores_equal_the_serving_path_row_by_row(predictor, ranker):
    out = predictor.predict(pa.Table.from_pandas(ROWS, preserve_index=False))
    scored = out.scored.to_pandas()
    assert out.bad.num_rows == 0 and out.summary.rows == len(ROWS) and out.summary.bad == 0
    assert scored[ROW_ID].tolist() == list(range(len(ROWS)))
    assert scored[["user_id", "item_id", "device"]].equals(ROWS[["user_id", "item_id", "device"]])  # the input's rows kept
    np.testing.assert_allclose(scored[SCORE].to_numpy(), _rank_scores(ranker, ROWS), rtol=0, atol=1e-6)
    assert len(set(np.round(scored[SCORE], 6))) > 4  # rows really differ
    assert out.unknown_user_rows == 1 and out.unknown_item_rows == 1


def test_declared_column_names_and_text_multi_hot_are_accepted(predictor):
    canonical = predictor.predict(pa.Table.from_pandas(ROWS, preserve_index=False)).scored.column(SCORE)
    declared = ROWS.rename(columns={"user_id": "uid", "item_id": "sku"}).assign(
        tags=["|".join(t) if t is not None else None for t in ROWS.tags])
    out = predictor.predict(pa.Table.from_pandas(declared, preserve_index=False))
    assert "uid" in out.scored.column_names
    np.testing.assert_allclose(out.scored.column(SCORE).to_numpy(), canonical.to_numpy(), rtol=0, atol=1e-7)


def test_a_missing_context_column_scores_as_a_request_without_it(predictor, ranker, package):
    rows = ROWS[["user_id", "item_id", "price"]]
    cols = input_columns(package.preprocessor.schema, {c: pa.int64() for c in rows.columns}, "x")
    assert cols.missing == ("device", "tags") and cols.context == ("price",)
    out = predictor.predict(pa.Table.from_pandas(rows, preserve_index=False)).scored.column(SCORE).to_numpy()
    expected = [ranker.rank(int(r.user_id), [int(r.item_id)], context={} if pd.isna(r.price) else {"price": r.price}).items[0].score
                for r in rows.itertuples()]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


BAD = [  # (user_id, item_id, price, reason, detail)
    (None, 1, 1.0, "null_key", "user_id is empty"),
    (float("nan"), 1, 1.0, "null_key", "user_id=nan is null"),
    (1.5, 1, 1.0, "unparseable", "user_id=1.5 is not an integer"),
    (-3.0, 1, 1.0, "wrong_type", "user_id=-3 is negative"),
    (1.0, 2, float("nan"), "wrong_type", "price=nan is not finite"),
    (1.0, 2, float("inf"), "wrong_type", "price=inf is not finite"),
    (1.0, 2, 1e39, "wrong_type", "price=1e+39 is out of float32 range"),
    (-1.0, 2, float("nan"), "wrong_type", "user_id=-1 is negative"),  # two problems: the first column's
]


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_scored(predictor, ranker):
    good = [(2.0, 3, 5.0), (4.0, 8, None)]
    rows = [(u, i, p) for u, i, p, _, _ in BAD[:4]] + good + [(u, i, p) for u, i, p, _, _ in BAD[4:]]
    table = pa.table({"user_id": pa.array([r[0] for r in rows], pa.float64()), "item_id": [r[1] for r in rows],
                      "price": pa.array([r[2] for r in rows], pa.float64()), ROW_ID: np.arange(100, 100 + len(rows))})
    out = predictor.predict(table)
    bad = out.bad.to_pandas()
    assert out.bad.schema == BAD_SCHEMA
    assert bad[["reason", "detail"]].values.tolist() == [[r, d] for *_, r, d in BAD]
    assert bad.line_number.tolist() == [100, 101, 102, 103, 106, 107, 108, 109]  # row ids, not positions
    assert '"user_id": 1.5' in bad.raw[2]
    assert out.scored.num_rows + out.bad.num_rows == len(rows)  # nothing dropped silently
    assert out.scored.column(ROW_ID).to_pylist() == [104, 105]
    expected = [ranker.rank(2, [3], context={"price": 5.0}).items[0].score, ranker.rank(4, [8]).items[0].score]
    np.testing.assert_allclose(out.scored.column(SCORE).to_numpy(), expected, rtol=0, atol=1e-6)
    assert out.summary.rows == 10 and out.summary.bad == 8
    assert out.summary.by_reason == {"wrong_type": 5, "null_key": 2, "unparseable": 1}


def test_text_ids_and_numbers_follow_ingestions_rules(predictor):
    table = pa.table({"user_id": ["1", " 2 ", "", "NA", "x1", "1.0", "-4", "3"], "item_id": ["1"] * 8,
                      "price": ["1.5", "", "2", "3", "4", "5", "6", "abc"]})
    out = predictor.predict(table)
    assert out.bad.column("detail").to_pylist() == ["user_id is empty", "user_id='NA' is null", "user_id='x1' is not an integer",
                                                   "user_id='1.0' is not an integer", "user_id='-4' is negative",
                                                   "price='abc' is not a number"]
    assert out.scored.column(ROW_ID).to_pylist() == [0, 1]


def test_all_bad_and_empty_batches(predictor):
    out = predictor.predict(pa.table({"user_id": pa.nulls(3, pa.int64()), "item_id": [1, 2, 3]}))
    assert out.scored.num_rows == 0 and out.bad.num_rows == 3
    empty = predictor.predict(pa.table({"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64())}))
    assert empty.scored.num_rows == 0 and empty.summary.rows == 0


@pytest.mark.parametrize("types, needle", [
    ({"item_id": pa.int64()}, "no column 'user_id' or 'uid'"),
    ({"user_id": pa.int64(), "item_id": pa.bool_()}, "'item_id' (item_id) is bool"),
    ({"user_id": pa.int64(), "item_id": pa.int64(), "device": pa.list_(pa.string())}, "give one value (text or a number)"),
    ({"user_id": pa.int64(), "item_id": pa.int64(), "price": pa.bool_()}, "numeric context feature"),
    ({"user_id": pa.int64(), "item_id": pa.int64(), "score": pa.float32()}, "'score', which predict writes"),
])
def test_bad_columns_are_one_clear_error(package, types, needle):
    with pytest.raises(DataFormatError, match="rows.parquet") as e:
        input_columns(package.preprocessor.schema, types, "rows.parquet")
    assert needle in str(e.value)


def test_bad_fraction_above_the_limit_stops_naming_the_setting(predictor):
    out = predictor.predict(pa.table({"user_id": [1, None, 2, 3], "item_id": [1, 2, 3, 4]}))
    check_bad_fraction(out.summary, 0.25, "rows.parquet", "q/bad_rows.parquet")  # 1 of 4: at the limit, fine
    with pytest.raises(TooManyBadRowsError, match=r"above predict.max_bad_fraction=0.2\. .* q/bad_rows.parquet; .*raise predict"):
        check_bad_fraction(out.summary, 0.2, "rows.parquet", "q/bad_rows.parquet")


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("concurrency", -1), ("max_bad_fraction", 1.5), ("threads", 0),
                                        ("separator", ""), ("model", "")])
def test_config_checks_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"predict.{key}="):
        PredictConfig(**{key: value})
    assert PredictConfig(output="out/scores").quarantine_uri == "out/scores.quarantine"


# -- the Ray edge's Ray-free parts: the read plan and the actor's work, run here in-process ----------


def test_parquet_plan_reads_every_row_once_with_its_row_id(tmp_path):
    folder = tmp_path / "rows"
    folder.mkdir()
    pq.write_table(pa.table({"user_id": np.arange(25), "item_id": np.arange(25) % 7}), folder / "a.parquet", row_group_size=4)
    pq.write_table(pa.table({"user_id": np.arange(25, 40), "item_id": np.arange(15)}), folder / "b.parquet", row_group_size=10)
    plan = batch.plan_input(str(folder), batch_size=8)
    assert plan.rows == 40 and set(plan.types) == {"user_id", "item_id"}
    # a: row groups of 4 two at a time, then the last 1; b: its group of 10 in slices of 8 and 2, then its 5
    assert [p["rows"] for p in plan.pieces] == [8, 8, 8, 1, 8, 2, 5]
    assert all(p["rows"] <= 8 for p in plan.pieces)
    read = batch._read_pieces(plan.pieces)
    assert read.column("user_id").to_pylist() == list(range(40)) and read.column(ROW_ID).to_pylist() == list(range(40))


def test_scoring_a_package_imports_no_torch(package):
    """The ONNX path (a predict actor, a Serve replica, the ``mlsys predict`` driver) reads and scores a
    package without torch: importing it took ~1.1 s of each actor's and replica's start (docs/benchmarks.md)."""
    import subprocess
    import sys

    code = f"""
import sys, pyarrow as pa
import mlsys, mlsys.api.predict, mlsys.serve.app, mlsys.serve.batch, mlsys.serve.graph
from mlsys.registry.package import read_package
from mlsys.serve.predict import BatchPredictor
uri = {str(package.path)!r}
assert BatchPredictor(read_package(uri)).predict(pa.table({{"user_id": [1, 2], "item_id": [1, 2]}})).scored.num_rows == 2
assert len(mlsys.load_model(uri).rank(1, [1, 2]).scores) == 2
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_csv_plan_reads_mixed_columns_as_text(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("user_id,item_id\n" + "1,2\n" * 300_000 + "x,3\n")  # "x" after pyarrow's first block (1 MiB) of integers
    plan = batch.plan_input(str(path), batch_size=8)
    assert plan.rows == 300_001 and plan.table.column(ROW_ID).to_pylist()[-1] == 300_000
    assert pa.types.is_string(plan.types["user_id"])


@pytest.mark.parametrize("name, needle", [("missing.parquet", "no such file"), ("rows.json", "not a Parquet")])
def test_unreadable_inputs_are_one_clear_error(tmp_path, name, needle):
    (tmp_path / "rows.json").write_text("{}")
    with pytest.raises(DataFormatError, match=f"--input .*{needle}"):
        batch.plan_input(str(tmp_path / name), batch_size=8)


def test_the_actor_writes_its_rows_and_its_bad_rows(package, tmp_path):
    actor = batch.PredictActor(str(package.path), PredictConfig(), "rows.parquet", str(tmp_path / "out"),
                               str(tmp_path / "q" / "parts"), None)
    table = pa.table({"user_id": [3, None, 1], "item_id": [2, 2, 5], ROW_ID: [12, 10, 11]})
    counts = actor(table).to_pylist()
    assert counts == [{"rows": 3, "bad": 1, "by_reason": '{"null_key": 1}', "unknown_users": 0, "unknown_items": 0}]
    written = pq.read_table(tmp_path / "out" / "part-000000000010.parquet")
    assert written.column(ROW_ID).to_pylist() == [11, 12]  # sorted by row id
    merged = batch._merge_quarantine(str(tmp_path / "q"), str(tmp_path / "q" / "parts"))
    assert pq.read_table(merged).column("line_number").to_pylist() == [10]
    assert not (tmp_path / "q" / "parts").exists()


def test_the_actor_reads_the_pieces_it_is_given(package, tmp_path):
    """Given a plan's Parquet pieces (as Ray Data hands them, a table of one row each), the actor reads
    their rows itself and scores them under their row ids."""
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"user_id": [1, 2, 3, 4, 5], "item_id": [1, 2, 3, 4, 5]}), path, row_group_size=2)
    plan = batch.plan_input(str(path), batch_size=2)
    actor = batch.PredictActor(str(package.path), PredictConfig(), str(path), str(tmp_path / "out"),
                               str(tmp_path / "q" / "parts"), None, reads=True)
    assert [actor(pa.Table.from_pylist([piece])).column("rows")[0].as_py() for piece in plan.pieces] == [2, 2, 1]
    written = pq.read_table(tmp_path / "out").sort_by(ROW_ID)
    assert written.column(ROW_ID).to_pylist() == [0, 1, 2, 3, 4] and written.column("user_id").to_pylist() == [1, 2, 3, 4, 5]


def test_frozen_config_replaced_by_flags_keeps_checks():
    cfg = dataclasses.replace(PredictConfig(), input="a.parquet", output="b")
    assert (cfg.input, cfg.output, cfg.model) == ("a.parquet", "b", "ctr@champion")
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, batch_size=-5)
