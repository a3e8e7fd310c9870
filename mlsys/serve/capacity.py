"""Sizing on paper: what grows with rows, users, items, candidates and QPS (docs/scaling.md).

Plain arithmetic, no Ray and no torch, so a capacity plan is a few function calls and the
doc's worked numbers are tested (``tests/unit/test_capacity.py``). Every formula follows
the code it sizes: the one embedding table of :class:`mlsys.models.blocks.SparseEmbeddings`,
the preprocessor's vocabularies (``len(vocabulary) + 2``: padding and out-of-vocabulary rows),
Feast's SQLite and Redis online stores, the point-in-time join of
:mod:`mlsys.features.offline`, and Ray Serve's default autoscaling policy.

>>> rows = table_rows((945, 1482, 4, 23), (21,))            # MovieLens-100K's package
>>> rows, embedding_table_bytes(rows, 16, first_order=True)
(2475, 168300)
>>> replicas_for(qps=100, latency_s=0.05, target_ongoing_requests=2)  # 5 requests in flight
3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

FP32 = 4  # bytes per float32: parameters, gradients, Adam moments, online float features
KEY_TS_BYTES = 16  # an int64 join key and a timestamp[ns]: what every feature-view row carries besides its features
# mlsys.features.offline.BROADCAST_ROWS: a view of at most this many rows is sent whole to every join task
BROADCAST_ROWS = 5_000_000
# Bytes per stored (entity, feature) row of Feast's SQLite online store, measured: MovieLens-100K's online.db
# (2,564,096 bytes, page-rounded, for 13,736 rows of 4 views, with the table, its primary key and entity-key indexes).
SQLITE_BYTES_PER_ROW = 187

Strategy = Literal["ddp", "zero1", "zero2", "zero3"]


# -- embedding tables ----------------------------------------------------------------------------


def vocabulary_rows(*distinct_values: int) -> int:
    """Table rows for inputs with these many distinct (kept) values: each vocabulary adds 2 rows.

    The preprocessor maps a value to ``2 + rank`` (0 padding, 1 out-of-vocabulary), so an input with
    V kept values has V + 2 rows. Users, items and every categorical and multi-hot vocabulary:

    >>> vocabulary_rows(1_000_000, 100_000, 2, 6, 18)    # synthetic: users, items, gender, occupation, genres
    1100036
    """
    return sum(v + 2 for v in distinct_values)


def table_rows(categorical_sizes: Sequence[int], multi_hot_sizes: Sequence[int] = ()) -> int:
    """Rows of a model's one table: a block per categorical field and per multi-hot feature
    (``InputSpec.categorical_sizes`` and ``multi_hot_sizes``, already + 2; the history reuses the item block)."""
    return sum(categorical_sizes) + sum(multi_hot_sizes)


def embedding_table_bytes(rows: int, dim: int, dtype_bytes: int = FP32, first_order: bool = False) -> int:
    """``rows x (dim + first_order) x dtype_bytes``: one table of ``dim`` columns (plus the first-order
    weight column of LR, FM, DeepFM and Wide&Deep).

    >>> embedding_table_bytes(2475, 16)
    158400
    """
    return rows * (dim + int(first_order)) * dtype_bytes


def training_bytes_per_worker(params: int, workers: int = 1, strategy: Strategy = "ddp") -> float:
    """Persistent training state per worker, fp32 with Adam (docs/benchmarks.md, "DeepSpeed ZeRO memory").

    DDP: weights 4 + gradients 4 + Adam's two moments 8 = 16 bytes a parameter on every worker.
    DeepSpeed's ZeRO optimizer also keeps an fp32 master copy of its partition (K = 12 bytes a parameter
    of optimizer state), and divides by the N workers: ZeRO-1 8Psi + 12Psi/N (optimizer state), ZeRO-2
    4Psi + 16Psi/N (and gradients), ZeRO-3 20Psi/N (and parameters). A lower bound: the measured peak of
    an embedding-dominated model was *not* lower under ZeRO (autograd builds the table's full dense
    gradient before it is reduce-scattered, and ZeRO-3 gathers the whole table for forward and backward).

    >>> training_bytes_per_worker(1_000_000), training_bytes_per_worker(1_000_000, 2, "zero3")
    (16000000.0, 10000000.0)
    """
    n = max(1, workers)
    per_param = {"ddp": 16.0, "zero1": 8 + 12 / n, "zero2": 4 + 16 / n, "zero3": 20 / n}
    if strategy not in per_param:
        raise ValueError(f"strategy={strategy!r}: one of {sorted(per_param)}")
    return params * per_param[strategy]


def serving_weight_bytes(params: int, replicas: int = 1, dtype_bytes: int = FP32) -> int:
    """Weights in serving: every replica holds its own copy, weights only (no gradients, no optimizer),
    a quarter of a DDP worker's 16 bytes a parameter. For the split graph apply it per deployment:
    the embedding replicas' table parameters, the dense replicas' dense parameters."""
    return params * replicas * dtype_bytes


# -- the online store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineView:
    """One materialized feature view: how many entities (users or items) and features it has."""

    name: str
    entities: int
    features: int


def online_store_rows(views: Sequence[OnlineView]) -> int:
    """SQLite rows (Feast's SQLite store keeps one row per (entity key, feature), the latest value only):
    ``sum(entities x features)``. It grows with users and items, not with events."""
    return sum(v.entities * v.features for v in views)


def redis_hash_fields(views: Sequence[OnlineView]) -> int:
    """Redis hash fields: one hash per entity key, a field per feature and one ``_ts:<view>`` per view."""
    return sum(v.entities * (v.features + 1) for v in views)


def online_store_bytes(rows: int, bytes_per_row: float = SQLITE_BYTES_PER_ROW) -> float:
    """The online store on disk: ``rows x bytes_per_row`` (SQLite measured: :data:`SQLITE_BYTES_PER_ROW`)."""
    return rows * bytes_per_row


# -- the point-in-time join ----------------------------------------------------------------------


@dataclass(frozen=True)
class JoinView:
    """A feature view as the join moves it: its rows, their Arrow bytes (key + timestamp + features) and key."""

    name: str
    key: str
    rows: int
    row_bytes: float

    @property
    def feature_bytes(self) -> float:
        """What each label row gains from this view: its row without the key and the timestamp."""
        return self.row_bytes - KEY_TS_BYTES


@dataclass(frozen=True)
class JoinTraffic:
    """Bytes through the object store of one training-set join (:func:`pit_join_traffic`)."""

    broadcast_bytes: float  # small views, read once and sent to every node that runs a join task
    shuffled_bytes: float  # label blocks and large views, hash-partitioned by join key, once per key
    output_bytes: float  # the training set: every label row with every view's features

    @property
    def shuffle_stages(self) -> bool:
        return self.shuffled_bytes > 0


def pit_join_traffic(label_rows: int, label_row_bytes: float, views: Sequence[JoinView],
                     broadcast_rows: int = BROADCAST_ROWS) -> JoinTraffic:
    """What :func:`mlsys.features.offline.join_refs` moves: views of at most ``broadcast_rows`` rows are
    joined first without a shuffle (read once, sent whole to the join tasks); then, per join key of the
    larger views, the label rows (with every feature joined so far) and those views' rows are split into
    hash buckets and each bucket joined in one task. Ray tasks on Arrow refs, not Ray Data's shuffle.

    >>> t = pit_join_traffic(10_000_000, 45, [JoinView("user_aggregates", "user_id", 10_000_000, 44)])
    >>> t.shuffled_bytes / 1e9, t.output_bytes / 1e9    # 10M labels x 45 B + 10M rows x 44 B; 10M x (45 + 28)
    (0.89, 0.73)
    """
    small = [v for v in views if v.rows <= broadcast_rows]
    row_bytes = label_row_bytes + sum(v.feature_bytes for v in small)
    shuffled = 0.0
    for key in dict.fromkeys(v.key for v in views if v.rows > broadcast_rows):
        stage = [v for v in views if v.rows > broadcast_rows and v.key == key]
        shuffled += label_rows * row_bytes + sum(v.rows * v.row_bytes for v in stage)
        row_bytes += sum(v.feature_bytes for v in stage)
    return JoinTraffic(sum(v.rows * v.row_bytes for v in small), shuffled, label_rows * row_bytes)


# -- serving: replicas for a load ----------------------------------------------------------------


def ongoing_requests(qps: float, latency_s: float) -> float:
    """Little's law: requests in the system = arrival rate x time each spends in it (``L = lambda W``)."""
    return qps * latency_s


def replicas_for(qps: float, latency_s: float, target_ongoing_requests: float, min_replicas: int = 1,
                 max_replicas: Optional[int] = None) -> int:
    """``ceil(qps x latency_s / target_ongoing_requests)``, within ``[min_replicas, max_replicas]``.

    What Ray Serve's default policy converges to: it divides the deployment's total ongoing requests
    (queued at the handles plus running on the replicas, averaged over ``look_back_period_s``) by
    ``target_ongoing_requests`` and rounds up (``upscaling_factor`` 1), after ``upscale_delay_s`` or
    ``downscale_delay_s`` of agreeing decisions; by Little's law those requests are ``qps x latency``.

    >>> replicas_for(qps=60, latency_s=0.1, target_ongoing_requests=2), replicas_for(60, 0.1, 2, max_replicas=2)
    (3, 2)
    """
    if target_ongoing_requests <= 0:
        raise ValueError(f"target_ongoing_requests={target_ongoing_requests}: must be > 0")
    n = max(min_replicas, math.ceil(ongoing_requests(qps, latency_s) / target_ongoing_requests))
    return n if max_replicas is None else min(n, max_replicas)


@dataclass(frozen=True)
class ReplicaLoad:
    """One replica measured at a fixed concurrency: mean and p99 latency (seconds)."""

    concurrency: float
    latency_s: float
    p99_s: float

    @property
    def qps(self) -> float:
        """What the replica serves at that concurrency (Little's law: ``concurrency / latency``)."""
        return self.concurrency / self.latency_s


def target_for_p99(measured: Sequence[ReplicaLoad], p99_target_s: float) -> ReplicaLoad:
    """The highest measured per-replica concurrency whose p99 stays within ``p99_target_s``:
    the ``target_ongoing_requests`` for that latency objective."""
    within = [m for m in measured if m.p99_s <= p99_target_s]
    if not within:
        best = min(measured, key=lambda m: m.p99_s)
        raise ValueError(f"no measured concurrency keeps p99 <= {p99_target_s * 1000:.1f} ms (best: "
                         f"{best.p99_s * 1000:.1f} ms at {best.concurrency:g}); a faster replica, or a looser target")
    return max(within, key=lambda m: m.concurrency)


def replicas_for_p99(qps: float, measured: Sequence[ReplicaLoad], p99_target_s: float, min_replicas: int = 1,
                     max_replicas: Optional[int] = None) -> int:
    """Replicas to serve ``qps`` with each replica at most at the concurrency whose p99 was within target:
    ``ceil(qps / qps_per_replica)`` at that concurrency, i.e. :func:`replicas_for` with its latency and
    ``target_ongoing_requests`` = that concurrency. Holds while replicas do not share cores: on a machine
    whose CPUs are all busy another replica adds queueing, not throughput.

    >>> loads = [ReplicaLoad(1, 0.020, 0.030), ReplicaLoad(2, 0.030, 0.045), ReplicaLoad(4, 0.060, 0.090)]
    >>> replicas_for_p99(200, loads, p99_target_s=0.050)    # 2 in flight at 30 ms: 66.7 req/s a replica
    3
    """
    at = target_for_p99(measured, p99_target_s)
    return replicas_for(qps, at.latency_s, at.concurrency, min_replicas, max_replicas)


def latency_for_candidates(candidates: int, fixed_s: float, per_candidate_s: float) -> float:
    """A request's scoring time as it grows with candidates: ``fixed_s + candidates x per_candidate_s``
    (fit from two measured sizes: docs/scaling.md has DeepFM's in-process ``rank``)."""
    return fixed_s + candidates * per_candidate_s
