"""The ranker's encoded tables (PackageTables.encode) give the model inputs the raw rows encode to
(PackageTables.fetch + with_context + the preprocessor's transform_batch: the path they replace),
bit for bit, on a real package with every kind of feature in every table and many requests:
unknown users and items, ids the vocabulary knows without attributes, empty and long histories,
missing values, context given in part, as numbers or text, unseen values. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import InvalidRequestError
from mlsys.features.request import FrameEncoder
from mlsys.models import MODEL_INPUTS, ModelConfig
from mlsys.models.zoo import build_model
from mlsys.registry.package import read_package, write_package
from mlsys.serve.ranker import PackageTables, RankingModel, ScoredItem

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

SCHEMA = FeatureSchema(
    features=(
        Feature("segment", Kind.categorical, Table.users), Feature("langs", Kind.multi_hot, Table.users),
        Feature("age", Kind.numeric, Table.users),
        Feature("brand", Kind.categorical, Table.items), Feature("shelf", Kind.categorical, Table.items),
        Feature("tags", Kind.multi_hot, Table.items), Feature("price", Kind.numeric, Table.items),
        Feature("device", Kind.categorical, Table.events), Feature("topics", Kind.multi_hot, Table.events),
        Feature("hour", Kind.numeric, Table.events),
    ),
    sources={"user_id": "uid", "item_id": "sku", "timestamp": "ts", "label": "clicked"},
    history_length=5,
    multi_hot_length=2,
)
# Only the roles and the behaviour sequence: no attribute, no context, no multi-hot or numeric input.
BARE = FeatureSchema(features=(), sources=SCHEMA.sources, history_length=3)
DEVICES, TOPICS, LANGS, TAGS = ["ios", "web", "android"], ["a", "b", "c", "d"], ["en", "fr", "de"], ["sale", "new", "eco", "kids"]


def _lists(rng, values, n, most=3):
    return [list(rng.choice(values, rng.integers(0, most + 1))) for _ in range(n)]


def _tables(rng):
    # Users 1..30 (ids 31..35 only in the training events), items 1..60 (61..70 only in the events).
    users = pd.DataFrame({
        "user_id": np.arange(1, 31, dtype=np.int64),
        "segment": rng.choice(["new", "loyal", "vip", None], 30),
        "langs": _lists(rng, LANGS, 30),
        "age": np.where(rng.random(30) < 0.2, np.nan, rng.integers(15, 70, 30)).astype(np.float64),
        "history": [list(rng.integers(1, 75, rng.integers(0, 9))) for _ in range(30)],  # some longer than 5, some unseen
    })
    items = pd.DataFrame({
        "item_id": np.arange(60, 0, -1, dtype=np.int64),  # not sorted
        "brand": rng.choice(["acme", "globex", "initech", "umbrella", None], 60),
        "shelf": rng.integers(1, 9, 60),  # a categorical held as integers
        "tags": [None if i % 13 == 0 else t for i, t in enumerate(_lists(rng, TAGS, 60))],
        "price": np.where(rng.random(60) < 0.1, np.nan, rng.gamma(2.0, 10.0, 60)).astype(np.float32),
    })
    return users, items


def _train_frame(rng, users, items, n=600):
    u = users.set_index("user_id").reindex(rng.integers(1, 36, n))
    i = items.set_index("item_id").reindex(rng.integers(1, 71, n))
    return pd.DataFrame({
        "user_id": u.index.to_numpy(), "item_id": i.index.to_numpy(),
        "segment": u["segment"].to_numpy(), "langs": [v if isinstance(v, list) else [] for v in u["langs"]],
        "age": u["age"].to_numpy(), "brand": i["brand"].to_numpy(), "shelf": i["shelf"].to_numpy(),
        "tags": [v if isinstance(v, list) else [] for v in i["tags"]], "price": i["price"].to_numpy(np.float64),
        "device": rng.choice(DEVICES[:2], n), "topics": _lists(rng, TOPICS[:3], n), "hour": rng.integers(0, 24, n).astype(float),
        "history": [list(rng.integers(1, 71, rng.integers(0, 6))) for _ in range(n)],
        "label": rng.integers(0, 2, n).astype(np.float32),
    })


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    return {name: _package(schema, tmp_path_factory.mktemp(name)) for name, schema in (("every-kind", SCHEMA), ("bare", BARE))}


@pytest.fixture(params=["every-kind", "bare"])
def package(request, packages):
    return packages[request.param]


@pytest.fixture
def rich(packages):
    return packages["every-kind"]


def _package(schema: FeatureSchema, directory):
    rng = np.random.default_rng(7)
    users, items = _tables(rng)
    frame = _train_frame(rng, users, items)
    users, items = users[["user_id", *schema.table_features(Table.users), "history"]], items[["item_id", *schema.table_features(Table.items)]]
    frame = frame[[c for c in frame if c in {*schema.request_columns, "label"}]]
    pre = CtrPreprocessor(schema, min_count=3).fit_frame(frame)  # rare values: OOV
    assert set(pre.vocabularies_["user_id"]) - set(users.user_id) and set(pre.vocabularies_["item_id"]) - set(items.item_id)
    config = ModelConfig(name="din", embed_dim=4, mlp_dims=[8])
    torch.manual_seed(0)
    model = build_model(pre.input_spec(), config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    path = write_package(directory / "package", model=model, model_config=config, preprocessor=pre, users=users, items=items, lineage={})
    return read_package(str(path))


def _requests(seed: int, n: int, schema: FeatureSchema = SCHEMA):
    rng = np.random.default_rng(seed)
    contexts = [None, {}] if not schema.context else [None, {}, {"device": "ios"}, {"device": "tv", "hour": 3}, {"hour": 25.5, "topics": ["a", "d", "b"]},
                {"device": None, "topics": []}, {"device": 7, "topics": ["c"], "hour": 0.0}, {"topics": ["a", 1]}]
    for i in range(n):
        user = int(rng.integers(0, 40))  # 0 and 36..39: unknown; 31..35: known to the vocabulary only
        candidates = rng.integers(0, 80, rng.integers(1, 40)).tolist()  # duplicates, unknown items
        yield user, candidates, contexts[i % len(contexts)]


def _assert_same_inputs(got: dict, expected: dict):
    assert list(got) == list(MODEL_INPUTS)
    for name in MODEL_INPUTS:
        a, b = got[name], expected[name]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        assert a.tobytes() == b.tobytes(), name  # bit for bit, floats included


def test_encoded_tables_give_the_raw_rows_inputs_bit_for_bit(package):
    tables = PackageTables(package)
    reference = FrameEncoder(tables, package.preprocessor)  # fetch -> with_context -> transform_batch
    for user, candidates, context in _requests(0, 300, package.preprocessor.schema):
        ids = np.asarray(candidates, dtype=np.int64)
        got, expected = tables.encode(user, ids, context), reference.encode(user, ids, context)
        _assert_same_inputs(got.inputs, expected.inputs)
        assert (got.unknown_user, got.unknown_items) == (expected.unknown_user, expected.unknown_items)
        np.testing.assert_array_equal(got.item_ids, ids)
        pd.testing.assert_frame_equal(got.features(), expected.features())
        _assert_same_columns(got.columns(), expected.features())


def _assert_same_columns(columns: dict, frame: pd.DataFrame):
    """The columns the feature log reads (built from the raw tables, no frame) hold the frame's rows:
    the same names in order, and the same values once in Arrow, as the log stores them."""
    import pyarrow as pa

    assert list(columns) == list(frame.columns)
    for name in frame.columns:
        assert len(columns[name]) == len(frame), name
        got, expected = pa.array(columns[name], from_pandas=True), pa.array(frame[name].to_numpy(), from_pandas=True)
        assert got.to_pylist() == expected.to_pylist(), name


def test_requests_cover_what_they_should(package):
    tables = PackageTables(package)
    seen = {"unknown user": 0, "vocabulary-only user": 0, "unknown items": 0, "history cut": 0, "empty history": 0}
    vocab_only = set(package.preprocessor.vocabularies_["user_id"]) - set(package.users.user_id)
    lengths = dict(zip(package.users.user_id, package.users.history.map(len)))
    for user, candidates, context in _requests(0, 300, package.preprocessor.schema):
        got = tables.encode(user, np.asarray(candidates, dtype=np.int64), context)
        seen["unknown user"] += got.unknown_user
        seen["vocabulary-only user"] += user in vocab_only
        seen["unknown items"] += got.unknown_items > 0
        seen["history cut"] += lengths.get(user, 0) > package.preprocessor.history_length
        seen["empty history"] += lengths.get(user, 0) == 0 and not got.unknown_user
    assert all(seen.values()), seen


def test_rank_scores_the_encoded_inputs_as_the_raw_rows(package):
    ranker = RankingModel(package, engine="onnx")
    for user, candidates, context in _requests(1, 60, package.preprocessor.schema):
        ranking = ranker.rank(user, candidates, k=5, context=context)
        frame, unknown_user, unknown_items = ranker.request_frame(user, candidates, context)
        expected = ranker.score_frame(frame)  # the preprocessor's transform_batch, then the same graph
        np.testing.assert_array_equal(ranking.scores, expected)
        order = np.argsort(-expected, kind="stable")[:5]
        np.testing.assert_array_equal(ranking.item_ids, np.asarray(candidates)[order])
        np.testing.assert_array_equal(ranking.item_scores, expected[order])
        assert ranking.items == [ScoredItem(int(candidates[i]), float(expected[i])) for i in order]
        assert (ranking.unknown_user, ranking.unknown_items) == (unknown_user, unknown_items)
        pd.testing.assert_frame_equal(ranking.features, frame)


def test_the_raw_rows_are_built_only_when_asked_for(rich):
    ranking = RankingModel(rich).rank(3, [1, 2, 3], context={"device": "web"})
    assert "frame" not in ranking.request._cache
    assert ranking.features["device"].tolist() == ["web"] * 3
    assert ranking.features is ranking.features


def test_encode_is_rank_without_scoring(rich):
    ranker = RankingModel(rich, engine="torch")
    request = ranker.encode(5, np.array([4, 99, 4], dtype=np.uint32), {"hour": 12})
    assert request.inputs["categorical"].dtype == np.int64 and request.inputs["numeric"].dtype == np.float32
    assert request.item_ids.dtype == np.int64 and request.unknown_items == 1 and not request.unknown_user
    scores = ranker.scorer.score_inputs(request.inputs)
    np.testing.assert_array_equal(scores, ranker.rank(5, [4, 99, 4], context={"hour": 12}).scores)
    # Scored elsewhere (a split graph's dense half), ranked here: as rank ranks.
    assert ranker.ranking(request, scores, k=2) == ranker.rank(5, [4, 99, 4], k=2, context={"hour": 12})
    with pytest.raises(InvalidRequestError, match="k must be a positive integer"):
        ranker.ranking(request, scores, k=0)


@pytest.mark.parametrize("candidates, message", [
    ([1, True], "got True"), ([1, 2.0], "got 2.0"), (np.array([1.0, 2.0]), r"got np.float64\(1.0\)"),
    (np.array([True]), "got np.True_"), ([1, 2**63], "64-bit integer item ids, got 9223372036854775808"),
    (np.array([2**63], dtype=np.uint64), "64-bit"), (np.array([[1, 2]]), "integer item ids"),
])
def test_candidates_that_are_not_int64_ids_are_refused(rich, candidates, message):
    with pytest.raises(InvalidRequestError, match=message):
        RankingModel(rich).rank(1, candidates)


def test_ids_of_any_integer_type_are_accepted(rich):
    ranker = RankingModel(rich)
    expected = ranker.rank(2, [5, 6, 7])
    for candidates in ([np.int32(5), 6, np.uint8(7)], (5, 6, 7), np.array([5, 6, 7], dtype=np.uint16), np.array([5, 6, 7], dtype=object)):
        assert ranker.rank(np.int16(2), candidates) == expected
    with pytest.raises(InvalidRequestError, match="64-bit"):
        ranker.rank(2**64, [1])


def test_context_errors_are_the_raw_paths(rich):
    ranker = RankingModel(rich)
    for context, message in (({"colour": "red"}, "'colour', not a request feature"), ({"hour": "noon"}, "context.hour must be a finite number"),
                             ({"topics": "a"}, "context.topics must be a list"), ({"device": ["ios"]}, "context.device must be one value")):
        with pytest.raises(InvalidRequestError, match=message):
            ranker.rank(1, [1, 2], context=context)
        with pytest.raises(InvalidRequestError, match=message):
            ranker.request_frame(1, [1, 2], context)
