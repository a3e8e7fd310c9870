"""mlsys.data.preprocessor.CtrPreprocessor, fitted in memory with ``fit_frame`` (no Ray cluster)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mlsys.data.preprocessor import FORMAT, OOV, PAD, CtrPreprocessor, merge_stats
from tests.schemas import CATEGORICAL, NUMERIC, movielens_like


def partial_stats(frame):
    return CtrPreprocessor(movielens_like()).partial_stats(frame)


def _prep(history_length: int = 20, max_genres: int = 4, min_count: int = 1) -> CtrPreprocessor:
    return CtrPreprocessor(movielens_like(history_length, max_genres), min_count)


def _frame() -> pd.DataFrame:
    """Hand-made train frame with known counts.

    user_id: 3 x3, 1 x2, 2 x1      item_id: 10 x3, 11 x2, 12 x1
    gender:  M x3, F x2, null x1   occupation: c x3, a x2, b x1
    genres:  y x5, x x3, z x1
    """
    return pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 3, 3],
            "item_id": [10, 11, 10, 12, 10, 11],
            "gender": ["F", "F", "M", None, "M", "M"],
            "occupation": ["a", "a", "b", "c", "c", "c"],
            "age": [20.0, 20.0, 30.0, None, 40.0, 40.0],
            "year": [1990.0, 1991.0, 1990.0, 2000.0, 1990.0, 1991.0],
            "genres": [["x", "y"], ["y"], ["x", "y"], ["z"], ["x", "y"], ["y"]],
            "history": [[], [10], [], [], [12], [12, 10]],
            "label": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
        }
    )


def _random_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(15, 70, n).astype(np.float64)
    age[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, 30, n).astype(np.int64),
            "item_id": rng.integers(1, 50, n).astype(np.int64),
            "gender": rng.choice(["F", "M"], n).astype(object),
            "occupation": rng.choice(["a", "b", "c", "d"], n).astype(object),
            "age": age,
            "year": rng.integers(1950, 2020, n).astype(np.float64),
            "genres": [list(rng.choice(["g1", "g2", "g3", "g4", "g5"], rng.integers(0, 4), replace=False)) for _ in range(n)],
            "history": [list(rng.integers(1, 60, rng.integers(0, 8))) for _ in range(n)],
            "label": rng.integers(0, 2, n).astype(np.float32),
        }
    )


def _fit(df=None, **kw) -> CtrPreprocessor:
    kw = {"history_length": 3, "max_genres": 2, "min_count": 1, **kw}
    return _prep(**kw).fit_frame(_frame() if df is None else df)


# -- vocabulary ---------------------------------------------------------------


def test_vocab_ordered_by_frequency():
    p = _fit()
    assert p.vocabularies_["user_id"] == [3, 1, 2]
    assert p.vocabularies_["item_id"] == [10, 11, 12]
    assert p.vocabularies_["gender"] == ["M", "F"]  # null is not a vocabulary entry
    assert p.vocabularies_["occupation"] == ["c", "a", "b"]
    assert p.vocabularies_["genres"] == ["y", "x", "z"]


def test_vocab_matches_counter_on_random_data():
    df = _random_frame(0, 300)
    p = _fit(df, min_count=3)
    for c in CATEGORICAL:
        counts = Counter(df[c].dropna().tolist())
        vocab = p.vocabularies_[c]
        assert set(vocab) == {v for v, n in counts.items() if n >= 3}
        freqs = [counts[v] for v in vocab]
        assert freqs == sorted(freqs, reverse=True)


def test_encoding_is_two_plus_rank():
    p = _fit()
    out = p.transform_batch(_frame())
    cat = out["categorical"]
    assert cat.dtype == np.int64 and cat.shape == (6, len(CATEGORICAL))
    # user_id column: vocab [3, 1, 2] -> 3:2, 1:3, 2:4
    assert cat[:, 0].tolist() == [3, 3, 4, 2, 2, 2]
    # item_id column: vocab [10, 11, 12]
    assert cat[:, 1].tolist() == [2, 3, 2, 4, 2, 3]
    # gender: M:2, F:3, null -> OOV
    assert cat[:, 2].tolist() == [3, 3, 2, OOV, 2, 2]


def test_min_count_sends_rare_values_to_oov():
    p = _fit(min_count=2)
    assert p.vocabularies_["user_id"] == [3, 1]  # user 2 seen once
    assert p.vocabularies_["occupation"] == ["c", "a"]
    assert p.vocabularies_["genres"] == ["y", "x"]
    out = p.transform_batch(_frame())
    assert out["categorical"][:, 0].tolist() == [3, 3, OOV, 2, 2, 2]
    assert out["categorical"][:, 1].tolist() == [2, 3, 2, OOV, 2, 3]
    assert out["categorical"][:, 3].tolist() == [3, 3, OOV, 2, 2, 2]
    assert out["multi_hot"][3].tolist() == [OOV, PAD]  # "z" is rare


def test_unseen_and_null_values_map_to_oov():
    p = _fit()
    df = _frame().iloc[:3].copy()
    df["user_id"] = [999, 1, 1000]
    df["item_id"] = [10, 777, 11]
    df["gender"] = [None, "X", "F"]
    df["occupation"] = [np.nan, "a", "zzz"]
    cat = p.transform_batch(df)["categorical"]
    assert cat[:, 0].tolist() == [OOV, 3, OOV]
    assert cat[:, 1].tolist() == [2, OOV, 3]
    assert cat[:, 2].tolist() == [OOV, OOV, 3]
    assert cat[:, 3].tolist() == [OOV, 3, OOV]


def test_no_real_value_encodes_to_padding():
    df = _random_frame(1, 200)
    p = _fit(df, min_count=2)
    out = p.transform_batch(df)
    assert (out["categorical"] >= OOV).all()


# -- numeric -------------------------------------------------------------------


def test_numeric_standardised_with_train_mean_std_and_null_to_zero():
    p = _fit()
    ages = np.array([20.0, 20.0, 30.0, 40.0, 40.0])  # the null is left out of the moments
    years = np.array([1990.0, 1991.0, 1990.0, 2000.0, 1990.0, 1991.0])
    assert p.scaling_["age"] == pytest.approx((ages.mean(), ages.std()))
    assert p.scaling_["year"] == pytest.approx((years.mean(), years.std()))
    out = p.transform_batch(_frame())
    num = out["numeric"]
    assert num.dtype == np.float32 and num.shape == (6, len(NUMERIC))
    expected_age = (np.array([20, 20, 30, np.nan, 40, 40]) - ages.mean()) / ages.std()
    expected_age[3] = 0.0
    np.testing.assert_allclose(num[:, 0], expected_age, rtol=1e-6)
    np.testing.assert_allclose(num[:, 1], (years - years.mean()) / years.std(), rtol=1e-5)


def test_numeric_uses_train_statistics_on_new_data():
    p = _fit()
    mean, std = p.scaling_["year"]
    df = _frame().iloc[:2].copy()
    df["year"] = [2050.0, np.nan]
    num = p.transform_batch(df)["numeric"]
    assert num[0, 1] == pytest.approx((2050.0 - mean) / std, rel=1e-6)
    assert num[1, 1] == 0.0


def test_constant_numeric_column_gets_unit_std():
    df = _frame()
    df["year"] = 2000.0
    p = _fit(df)
    assert p.scaling_["year"] == (2000.0, 1.0)
    assert np.all(p.transform_batch(df)["numeric"][:, 1] == 0.0)


# -- list features -------------------------------------------------------------


def test_history_keeps_the_last_l_items_right_padded():
    p = _fit(history_length=3)
    df = _frame().iloc[:4].copy()
    df["history"] = [[10, 11, 12, 10, 11], [12], [], [999, 10]]
    hist = p.transform_batch(df)["history"]
    assert hist.dtype == np.int64 and hist.shape == (4, 3)
    # item vocab [10, 11, 12] -> 2, 3, 4; keeps [12, 10, 11]
    assert hist.tolist() == [[4, 2, 3], [4, PAD, PAD], [PAD, PAD, PAD], [OOV, 2, PAD]]


def test_genres_keep_the_first_max_genres():
    p = _fit(max_genres=2)
    df = _frame().iloc[:4].copy()
    df["genres"] = [["z", "x", "y"], ["y"], [], ["nope", "x", "z"]]
    genres = p.transform_batch(df)["multi_hot"]
    assert genres.shape == (4, 2)
    # genre vocab [y, x, z] -> 2, 3, 4
    assert genres.tolist() == [[4, 3], [2, PAD], [PAD, PAD], [OOV, 3]]


def test_null_genres_are_all_padding():
    p = _fit()
    df = _frame().iloc[:2].copy()
    df["genres"] = [None, ["x"]]
    assert p.transform_batch(df)["multi_hot"].tolist() == [[PAD, PAD], [3, PAD]]


def test_null_history_is_all_padding():
    p = _fit()
    df = _frame().iloc[:2].copy()
    df["history"] = [None, [10]]
    assert p.transform_batch(df)["history"].tolist() == [[PAD, PAD, PAD], [2, PAD, PAD]]


def test_history_length_zero_gives_empty_history():
    p = _fit(history_length=0)
    assert p.transform_batch(_frame())["history"].shape == (6, 0)


def test_max_genres_zero_gives_empty_genres():
    p = _fit(max_genres=0)
    assert p.transform_batch(_frame())["multi_hot"].shape == (6, 0)


def test_null_integer_id_maps_to_oov():
    p = _fit()
    df = _frame().iloc[:2].copy()
    df["item_id"] = [10.0, np.nan]
    assert p.transform_batch(df)["categorical"][:, 1].tolist() == [2, OOV]


def test_list_columns_match_bruteforce_on_random_data():
    df = _random_frame(2, 150)
    p = _fit(df, history_length=4, max_genres=2, min_count=2)
    out = p.transform_batch(df)
    item_rank = {v: i + 2 for i, v in enumerate(p.vocabularies_["item_id"])}
    genre_rank = {v: i + 2 for i, v in enumerate(p.vocabularies_["genres"])}
    for row, hist, genres in zip(range(len(df)), df["history"], df["genres"]):
        exp_h = [item_rank.get(v, OOV) for v in hist[-4:]]
        assert out["history"][row].tolist() == exp_h + [PAD] * (4 - len(exp_h))
        exp_g = [genre_rank.get(v, OOV) for v in genres[:2]]
        assert out["multi_hot"][row].tolist() == exp_g + [PAD] * (2 - len(exp_g))


def test_label_passes_through_only_when_present():
    p = _fit()
    out = p.transform_batch(_frame())
    assert out["label"].dtype == np.float32
    assert out["label"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    no_label = p.transform_batch(_frame().drop(columns="label"))
    assert set(no_label) == {"categorical", "multi_hot", "history", "numeric"}


def test_transform_requires_fit():
    with pytest.raises(Exception, match="(?i)fit"):
        _prep().transform_batch(_frame())


# -- contract and persistence ------------------------------------------------------


def test_input_spec_sizes():
    p = _fit(history_length=5, max_genres=3, min_count=2)
    spec = p.input_spec()
    assert spec.categorical_fields == CATEGORICAL
    assert spec.categorical_sizes == tuple(len(p.vocabularies_[c]) + 2 for c in CATEGORICAL)
    assert spec.categorical_sizes == (4, 4, 4, 4)
    assert spec.multi_hot_sizes == (len(p.vocabularies_["genres"]) + 2,) == (4,)
    assert spec.item_field == "item_id"
    assert spec.item_size == 4
    assert (spec.multi_hot_fields, spec.multi_hot_length, spec.history_length) == (("genres",), 3, 5)
    assert spec.numeric_fields == NUMERIC
    out = p.transform_batch(_frame())
    # Every index fits its embedding table.
    for j, size in enumerate(spec.categorical_sizes):
        assert out["categorical"][:, j].max() < size
    assert out["multi_hot"].max() < spec.multi_hot_sizes[0]
    assert out["history"].max() < spec.item_size


@pytest.mark.parametrize("seed", range(3))
def test_json_round_trip_gives_identical_transform(seed):
    df = _random_frame(seed, 120)
    p = _fit(df, history_length=4, max_genres=3, min_count=2)
    text = p.to_json()
    json.loads(text)  # plain JSON
    q = CtrPreprocessor.from_json(text)
    assert (q.history_length, q.multi_hot_length, q.min_count, q.schema) == (4, 3, 2, p.schema)
    assert q.vocabularies_ == p.vocabularies_
    assert q.input_spec() == p.input_spec()
    new = _random_frame(seed + 50, 80)  # including unseen values
    a, b = p.transform_batch(new), q.transform_batch(new)
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k])
    # Integer vocabularies stay integers through JSON.
    assert all(isinstance(v, int) for v in q.vocabularies_["user_id"])


@pytest.mark.parametrize("fmt", [None, "mlsys.ctr-preprocessor/0", "something-else"])
def test_from_json_rejects_wrong_format(fmt):
    d = json.loads(_fit().to_json())
    if fmt is None:
        del d["format"]
    else:
        d["format"] = fmt
    with pytest.raises(ValueError, match="format"):
        CtrPreprocessor.from_json(json.dumps(d))
    assert json.loads(_fit().to_json())["format"] == FORMAT


# -- mergeable statistics ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_merge_of_halves_equals_stats_of_whole(seed):
    df = _random_frame(seed, 200)
    cut = 37 + 40 * seed
    halves = merge_stats([partial_stats(df.iloc[:cut]), partial_stats(df.iloc[cut:])])
    whole = merge_stats([partial_stats(df)])
    assert {c: dict(v) for c, v in halves["counts"].items()} == {c: dict(v) for c, v in whole["counts"].items()}
    for c in NUMERIC:
        assert halves["moments"][c][0] == whole["moments"][c][0]
        assert halves["moments"][c][1:] == pytest.approx(whole["moments"][c][1:], rel=1e-12)
    # And the fitted state is the same whichever way the data was split.
    a = _prep(4, 2, 2)._set_state(halves)
    b = _prep(4, 2, 2)._set_state(whole)
    assert a.vocabularies_ == b.vocabularies_
    for c in NUMERIC:
        assert a.scaling_[c] == pytest.approx(b.scaling_[c], rel=1e-9)


def test_partial_stats_survive_json():
    df = _random_frame(4, 60)
    parts = [json.loads(json.dumps(partial_stats(df.iloc[i::3]), default=lambda v: v.item())) for i in range(3)]
    merged = merge_stats(parts)
    direct = merge_stats([partial_stats(df)])
    assert {c: dict(v) for c, v in merged["counts"].items()} == {c: dict(v) for c, v in direct["counts"].items()}
    # Keys of integer columns are still ints after the JSON hop.
    assert all(isinstance(v, int) for v in merged["counts"]["user_id"])


def test_partial_stats_counts_and_moments():
    s = partial_stats(_frame())
    assert dict(s["counts"]["gender"]) == {"F": 2, "M": 3}
    assert dict(s["counts"]["genres"]) == {"x": 3, "y": 5, "z": 1}
    n, total, sq = s["moments"]["age"]
    assert (n, total, sq) == (5, 150.0, 20**2 * 2 + 30**2 + 40**2 * 2)
