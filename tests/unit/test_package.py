"""mlsys.registry.package (write/read/verify) and mlsys.serve.ranker on a tiny real package."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys import storage
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ArtifactIntegrityError, InvalidRequestError, ModelNotFoundError
from mlsys.models import MODEL_INPUTS, ModelConfig
from mlsys.models.zoo import build_model
from mlsys.registry.package import FORMAT, MANIFEST, ModelPackage, read_package, write_package
from mlsys.serve.ranker import Ranking, RankingModel
from tests.schemas import movielens_like

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

MODEL_CONFIG = ModelConfig(embed_dim=4, mlp_dims=[8])
EXPECTED_FILES = {
    "model.json",
    "model.onnx",
    "model.safetensors",
    "sparse.safetensors",
    "sparse.json",
    "dense.onnx",
    "preprocessor.json",
    "schema.json",
    "tables/users.parquet",
    "tables/items.parquet",
}

USERS = pd.DataFrame(
    {
        "user_id": np.array([1, 2, 3, 4, 5], dtype=np.int64),
        "age": [20.0, 31.0, 45.0, np.nan, 60.0],
        "gender": ["F", "M", "F", "M", "F"],
        "occupation": ["a", "b", "c", "a", "b"],
        "history": [[1, 2], [3], [], [4, 5, 6, 7], [8]],
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": np.arange(1, 11, dtype=np.int64),
        "year": np.arange(1990, 2000).astype(np.float32),
        "genres": [["g1"], ["g2", "g3"], ["g3"], ["g1", "g2"], [], ["g2"], ["g1"], ["g3"], ["g2"], ["g1", "g3"]],
    }
)


def _train_frame(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    user = rng.integers(1, 6, n)
    item = rng.integers(1, 11, n)
    u = USERS.set_index("user_id").loc[user]
    i = ITEMS.set_index("item_id").loc[item]
    return pd.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "gender": u["gender"].to_numpy(),
            "occupation": u["occupation"].to_numpy(),
            "age": u["age"].to_numpy(),
            "year": i["year"].to_numpy(dtype=np.float64),
            "genres": list(i["genres"]),
            "history": [list(rng.integers(1, 11, rng.integers(0, 4))) for _ in range(n)],
            "label": rng.integers(0, 2, n).astype(np.float32),
        }
    )


def _model(pre: CtrPreprocessor) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(pre.input_spec(), MODEL_CONFIG)
    with torch.no_grad():  # spread the weights so candidates get clearly different scores
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        model.sparse.table.weight[0].zero_()  # the padding row
    return model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pre = CtrPreprocessor(movielens_like(history_length=3, multi_hot_length=2), min_count=1).fit_frame(_train_frame())
    model = _model(pre)
    directory = tmp_path_factory.mktemp("pkg") / "package"
    out = write_package(
        directory,
        model=model,
        model_config=MODEL_CONFIG,
        preprocessor=pre,
        users=USERS,
        items=ITEMS,
        lineage={"fingerprint": "abc123", "eval_metrics": {"auc": 0.5}},
    )
    assert out == directory
    return directory, pre, model


@pytest.fixture(scope="module")
def package(built) -> ModelPackage:
    return read_package(str(built[0]))


@pytest.fixture(scope="module")
def rankers(package):
    return RankingModel(package, engine="onnx"), RankingModel(package, engine="torch")


@pytest.fixture
def copy(built, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(built[0], dest)
    return dest


# -- the package ------------------------------------------------------------------


def test_manifest_lists_every_file_with_sha256(built):
    directory = built[0]
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format"] == FORMAT
    assert manifest["model"] == "deepfm"
    assert manifest["lineage"] == {"fingerprint": "abc123", "eval_metrics": {"auc": 0.5}}
    on_disk = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk == EXPECTED_FILES
    for name, digest in manifest["files"].items():
        assert len(digest) == 64 and int(digest, 16) >= 0
        assert digest == storage.sha256_file(directory / name)


def test_read_package_loads_everything(package, built):
    _, pre, model = built
    assert package.model_config.embed_dim == 4 and list(package.model_config.mlp_dims) == [8]
    assert package.spec == pre.input_spec()
    assert package.preprocessor.vocabularies_ == pre.vocabularies_
    assert package.onnx_path.name == "model.onnx" and package.onnx_path.exists()
    pd.testing.assert_frame_equal(package.items[["item_id", "year"]], ITEMS[["item_id", "year"]])
    assert [list(h) for h in package.users["history"]] == [list(h) for h in USERS["history"]]
    loaded = package.torch_model()
    assert not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=0, atol=0)


def test_schema_describes_the_tensors(built, package):
    schema = json.loads((built[0] / "schema.json").read_text())
    spec = package.spec
    assert set(schema["inputs"]) == set(MODEL_INPUTS)
    assert schema["inputs"]["history"]["shape"] == [-1, spec.history_length]
    assert schema["inputs"]["multi_hot"]["shape"] == [-1, spec.multi_hot_length]
    assert schema["feature_schema"] == built[1].schema.to_dict()
    assert schema["outputs"]["score"]["shape"] == [-1]


def test_tampered_onnx_raises_integrity_error(copy):
    path = copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="model.onnx"):
        read_package(str(copy))


def test_tampered_table_raises_integrity_error(copy):
    with open(copy / "tables" / "items.parquet", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactIntegrityError, match="items.parquet"):
        read_package(str(copy))


def test_missing_file_raises_integrity_error(copy):
    (copy / "preprocessor.json").unlink()
    with pytest.raises(ArtifactIntegrityError, match="preprocessor.json"):
        read_package(str(copy))


def test_folder_without_manifest_raises_model_not_found(copy, tmp_path):
    (copy / MANIFEST).unlink()
    with pytest.raises(ModelNotFoundError, match="manifest.json"):
        read_package(str(copy))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError):
        read_package(str(empty))


def test_unknown_manifest_format_raises_model_not_found(copy):
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format"] = "mlsys.model-package/999"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelNotFoundError, match="999"):
        read_package(str(copy))


def test_untampered_copy_reads(copy):
    assert read_package(str(copy)).manifest["files"].keys() == EXPECTED_FILES


# -- ranking -----------------------------------------------------------------------------


def _direct_scores(built, frame: pd.DataFrame) -> np.ndarray:
    """Score a hand-built raw frame with the in-memory preprocessor and model."""
    _, pre, model = built
    inputs = pre.transform_batch(frame)
    with torch.no_grad():
        return torch.sigmoid(model(*(torch.from_numpy(inputs[k]) for k in MODEL_INPUTS))).numpy()


def _raw_frame(user_id: int, candidates: list[int]) -> pd.DataFrame:
    """The raw request rows, joined by hand from the tables (None for unknown ids)."""
    users = USERS.set_index("user_id")
    items = ITEMS.set_index("item_id")
    known = user_id in users.index
    rows = []
    for c in candidates:
        rows.append(
            {
                "user_id": user_id,
                "item_id": c,
                "gender": users.at[user_id, "gender"] if known else None,
                "occupation": users.at[user_id, "occupation"] if known else None,
                "age": users.at[user_id, "age"] if known else np.nan,
                "year": float(items.at[c, "year"]) if c in items.index else np.nan,
                "genres": list(items.at[c, "genres"]) if c in items.index else [],
                "history": list(users.at[user_id, "history"]) if known else [],
            }
        )
    return pd.DataFrame(rows)


def _check_ranking(ranking: Ranking, candidates: list[int], expected_scores: np.ndarray, k=None):
    scores = [s.score for s in ranking.items]
    assert scores == sorted(scores, reverse=True), "best first"
    expected = dict(zip(candidates, expected_scores.tolist()))
    assert len(ranking.items) == (min(k, len(candidates)) if k else len(candidates))
    for item in ranking.items:
        assert isinstance(item.item_id, int) and isinstance(item.score, float)
        assert item.score == pytest.approx(expected[item.item_id], abs=1e-5)
    # The top k are the k best.
    top = sorted(expected_scores.tolist(), reverse=True)[: len(ranking.items)]
    np.testing.assert_allclose(scores, top, atol=1e-5)


@pytest.mark.parametrize(
    "user_id, candidates",
    [(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), (4, [10, 3, 7]), (3, [5]), (2, [9, 8, 7, 6])],
)
def test_onnx_and_torch_rank_identically_and_match_direct_scoring(built, rankers, user_id, candidates):
    onnx_ranker, torch_ranker = rankers
    a = onnx_ranker.rank(user_id, candidates)
    b = torch_ranker.rank(user_id, candidates)
    expected = _direct_scores(built, _raw_frame(user_id, candidates))
    _check_ranking(a, candidates, expected)
    _check_ranking(b, candidates, expected)
    np.testing.assert_allclose([s.score for s in a.items], [s.score for s in b.items], atol=1e-5)
    assert not a.unknown_user and a.unknown_items == 0
    assert (b.unknown_user, b.unknown_items) == (False, 0)


def test_scores_differ_between_candidates_and_users(rankers):
    onnx_ranker, _ = rankers
    scores = {s.item_id: s.score for s in onnx_ranker.rank(1, list(range(1, 11))).items}
    assert max(scores.values()) - min(scores.values()) > 1e-3
    other = {s.item_id: s.score for s in onnx_ranker.rank(2, list(range(1, 11))).items}
    assert any(abs(scores[i] - other[i]) > 1e-4 for i in scores)


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_k_truncates_to_the_best(built, rankers, k):
    candidates = [2, 4, 6, 8, 10, 1, 3, 5, 7, 9]
    expected = _direct_scores(built, _raw_frame(5, candidates))
    for ranker in rankers:
        ranking = ranker.rank(5, candidates, k=k)
        _check_ranking(ranking, candidates, expected, k=k)
        full = ranker.rank(5, candidates)
        assert [s.item_id for s in ranking.items] == [s.item_id for s in full.items][:k]


def test_unknown_user_is_scored_with_default_features(built, rankers):
    candidates = [1, 2, 3]
    expected = _direct_scores(built, _raw_frame(999, candidates))
    for ranker in rankers:
        ranking = ranker.rank(999, candidates)
        assert ranking.unknown_user is True
        assert ranking.unknown_items == 0
        _check_ranking(ranking, candidates, expected)


def test_unknown_items_are_scored_and_counted(built, rankers):
    candidates = [1, 500, 2, 501, 502]
    expected = _direct_scores(built, _raw_frame(2, candidates))
    for ranker in rankers:
        ranking = ranker.rank(2, candidates)
        assert ranking.unknown_user is False
        assert ranking.unknown_items == 3
        assert {s.item_id for s in ranking.items} == set(candidates)
        _check_ranking(ranking, candidates, expected)
        assert all(np.isfinite(s.score) and 0 < s.score < 1 for s in ranking.items)


def test_unknown_user_and_items_together(rankers):
    for ranker in rankers:
        ranking = ranker.rank(12345, [600, 601])
        assert ranking.unknown_user is True and ranking.unknown_items == 2
        assert len(ranking.items) == 2


def test_numpy_ids_are_accepted(rankers):
    onnx_ranker, _ = rankers
    a = onnx_ranker.rank(np.int64(1), np.array([3, 1, 2]), k=np.int64(2))
    b = onnx_ranker.rank(1, [3, 1, 2], k=2)
    assert a == b


def test_request_frame_joins_user_and_item_attributes(rankers):
    onnx_ranker, _ = rankers
    frame, unknown_user, unknown_items = onnx_ranker.request_frame(4, [10, 77])
    assert (unknown_user, unknown_items) == (False, 1)
    assert frame["user_id"].tolist() == [4, 4]
    assert frame["gender"].tolist() == ["M", "M"]
    assert frame["occupation"].tolist() == ["a", "a"]
    assert np.isnan(frame["age"]).all()  # user 4 has no age
    assert frame["year"].iloc[0] == 1999.0 and np.isnan(frame["year"].iloc[1])
    assert list(frame["genres"].iloc[0]) == ["g1", "g3"] and list(frame["genres"].iloc[1]) == []
    assert [list(h) for h in frame["history"]] == [[4, 5, 6, 7]] * 2


@pytest.mark.parametrize(
    "user_id, candidates, k",
    [
        (1, [], None),  # empty candidates
        (1, (), None),
        (1, None, None),
        (1, "123", None),  # not a list
        ("1", [1, 2], None),  # non-int user id
        (1.0, [1, 2], None),
        (None, [1, 2], None),
        (True, [1, 2], None),  # bool is not an id
        (1, [1, "2"], None),  # non-int candidate
        (1, [1, 2.5], None),
        (1, [1, False], None),
        (1, [1, 2], 0),  # k must be positive
        (1, [1, 2], -3),
        (1, [1, 2], 1.5),
        (1, [1, 2], "2"),
    ],
)
def test_invalid_requests_raise(rankers, user_id, candidates, k):
    for ranker in rankers:
        with pytest.raises(InvalidRequestError):
            ranker.rank(user_id, candidates, k=k)


def test_too_many_candidates_raise(package):
    ranker = RankingModel(package, engine="torch", max_candidates=4)
    assert len(ranker.rank(1, [1, 2, 3, 4]).items) == 4
    with pytest.raises(InvalidRequestError, match="5"):
        ranker.rank(1, [1, 2, 3, 4, 5])


def test_split_engine_ranks_as_the_fused_graph(package, rankers):
    split = RankingModel(package, engine="split")
    for user_id, candidates in ((1, [1, 2, 3, 4, 5, 6]), (4, [7, 8, 9, 10]), (10**6, [1, 10**6])):
        np.testing.assert_allclose(split.rank(user_id, candidates).scores, rankers[0].rank(user_id, candidates).scores, atol=1e-5)


def test_unknown_engine_is_rejected(package):
    with pytest.raises(ValueError, match="engine"):
        RankingModel(package, engine="tensorrt")


@pytest.mark.parametrize("older", ["mlsys.model-package/1", "mlsys.model-package/3"])
def test_a_package_of_an_older_format_says_to_retrain(copy, older):
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format"] = older
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelNotFoundError, match="older mlsys.*retrain and register the model again"):
        read_package(str(copy))
