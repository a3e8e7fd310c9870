"""mlsys.serve.capacity: the sizing formulas of docs/scaling.md, on this project's real numbers."""

from __future__ import annotations

import doctest
import math

import pytest

from mlsys.serve import capacity
from mlsys.serve.capacity import (
    JoinView, OnlineView, ReplicaLoad, embedding_table_bytes, online_store_bytes, online_store_rows, pit_join_traffic,
    redis_hash_fields, replicas_for, replicas_for_p99, serving_weight_bytes, table_rows, target_for_p99,
    training_bytes_per_worker, vocabulary_rows,
)

# MovieLens-100K's DeepFM package (`mlsys run train.max_epochs=1`): model.json's InputSpec and
# model.safetensors' tensors (sparse.table.weight [2475, 17]; 63,974 parameters in all).
ML_CATEGORICAL = (945, 1482, 4, 23)  # user_id, item_id, gender, occupation (kept values + 2)
ML_MULTI_HOT = (21,)  # genres
ML_PARAMS, ML_TABLE_PARAMS = 63_974, 2475 * 17


def test_the_doc_examples_hold():
    assert doctest.testmod(capacity).failed == 0


def test_movielens_table_is_the_package_table():
    rows = table_rows(ML_CATEGORICAL, ML_MULTI_HOT)
    assert rows == 2475
    assert rows * 17 == ML_TABLE_PARAMS  # 16 columns + DeepFM's first-order weight
    assert embedding_table_bytes(rows, 16, first_order=True) == 168_300  # fp32
    assert embedding_table_bytes(rows, 16, dtype_bytes=2) == 79_200
    # kept values + 2 each: 943 users, 1,480 items (seen >= data.vocab_min_count=2 times in train), 2 genders, 21 occupations, 19 genres
    assert vocabulary_rows(943, 1480, 2, 21, 19) == rows


def test_training_state_quotes_the_zero_formulas():
    psi = ML_PARAMS
    assert training_bytes_per_worker(psi) == 16 * psi  # weights + gradients + Adam's 2 moments
    assert training_bytes_per_worker(psi, 2, "zero1") == 8 * psi + 12 * psi / 2
    assert training_bytes_per_worker(psi, 2, "zero2") == 4 * psi + 16 * psi / 2
    assert training_bytes_per_worker(psi, 2, "zero3") == 20 * psi / 2
    # the memory benchmark's ratios to DDP at N = 2: 0.88, 0.75, 0.62
    ratios = [training_bytes_per_worker(50_195_033, 2, s) / training_bytes_per_worker(50_195_033, 2) for s in ("zero1", "zero2", "zero3")]
    assert [round(r, 2) for r in ratios] == [0.88, 0.75, 0.62]
    with pytest.raises(ValueError, match="zero4"):
        training_bytes_per_worker(psi, 2, "zero4")  # type: ignore[arg-type]


def test_serving_holds_weights_only():
    assert serving_weight_bytes(ML_PARAMS, replicas=4) == 4 * 4 * ML_PARAMS
    assert serving_weight_bytes(ML_PARAMS) * 4 == training_bytes_per_worker(ML_PARAMS)


def test_online_store_rows_match_movielens_online_db():
    # The materialized store of /tmp/bench-serve (features=feast): 943 users, 1,682 items.
    views = [OnlineView("user_profile", 943, 3), OnlineView("item_profile", 1682, 2),
             OnlineView("user_aggregates", 943, 7), OnlineView("user_sequence", 942, 1)]  # one user never clicked
    assert online_store_rows(views) == 2829 + 3364 + 6601 + 942  # counted in online.db's four tables
    assert redis_hash_fields(views) == online_store_rows(views) + 943 + 1682 + 943 + 942
    assert online_store_bytes(online_store_rows(views)) == pytest.approx(2_564_096, rel=0.01)  # the file's size


def test_pit_join_broadcasts_small_views_and_shuffles_large_ones():
    from mlsys.features.offline import BROADCAST_ROWS

    assert capacity.BROADCAST_ROWS == BROADCAST_ROWS
    # MovieLens-100K: every view is small: no shuffle; the training set is 100,000 x 262.6 B (measured: 26.26 MB)
    ml = [JoinView("user_profile", "user_id", 943, 37.5), JoinView("item_profile", "item_id", 1682, 42.3),
          JoinView("user_aggregates", "user_id", 49_439, 45.1), JoinView("user_sequence", "user_id", 32_300, 156.4)]
    t = pit_join_traffic(100_000, 45.3, ml)
    assert not t.shuffle_stages
    assert t.output_bytes == pytest.approx(26_256_080, rel=0.01)
    # A large user-keyed view shuffles the label rows (with the small views' features) once, and itself.
    big = [JoinView("user_profile", "user_id", 1_000, 40), JoinView("user_aggregates", "user_id", 6_000_000, 44),
           JoinView("item_profile", "item_id", 7_000_000, 30)]
    t = pit_join_traffic(10_000_000, 45, big)
    first = 10_000_000 * (45 + 24) + 6_000_000 * 44
    second = 10_000_000 * (45 + 24 + 28) + 7_000_000 * 30
    assert t.shuffled_bytes == first + second
    assert t.broadcast_bytes == 1_000 * 40
    assert t.output_bytes == 10_000_000 * (45 + 24 + 28 + 14)


def test_replicas_follow_littles_law_like_serve():
    # Serve: desired = ceil(total ongoing / target); total ongoing = qps x latency
    assert replicas_for(0, 0.05, 2) == 1  # min_replicas
    assert replicas_for(40, 0.05, 2) == 1  # 2 in flight
    assert replicas_for(41, 0.05, 2) == 2
    assert replicas_for(160, 0.05, 2) == 4
    assert replicas_for(1000, 0.05, 2, max_replicas=4) == 4
    assert replicas_for(1000, 0.05, 8, min_replicas=1) == math.ceil(50 / 8)
    with pytest.raises(ValueError):
        replicas_for(10, 0.1, 0)


def test_replicas_for_a_p99_target():
    loads = [ReplicaLoad(1, 0.020, 0.030), ReplicaLoad(2, 0.030, 0.045), ReplicaLoad(4, 0.060, 0.090)]
    assert target_for_p99(loads, 0.050).concurrency == 2
    assert target_for_p99(loads, 0.100).concurrency == 4
    assert replicas_for_p99(200, loads, 0.050) == 3  # 66.7 req/s a replica at 2 in flight
    assert replicas_for_p99(200, loads, 0.100) == 3  # 66.7 req/s at 4 in flight too: no gain, more tail
    assert replicas_for_p99(200, loads, 0.035) == 4  # 50 req/s at 1 in flight
    with pytest.raises(ValueError, match="no measured concurrency keeps p99 <= 10.0 ms"):
        target_for_p99(loads, 0.010)
