"""Feature logging: sampling, batching to Parquet, bounded queue, label joins."""

import time

import numpy as np
import pandas as pd
import pytest

import pyarrow as pa

from mlsys.features.feature_log import (
    FeatureLogger, FeatureLoggingConfig, LoggedRequest, join_labels, log_table, read_feature_log, sampled)


def _request(rid: str, user: int = 1, items=(10, 11, 12), at: float = 1_000.0) -> LoggedRequest:
    frame = pd.DataFrame(
        {
            "user_id": np.full(len(items), user, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "gender": ["F"] * len(items),
            "age": np.full(len(items), 31.0, dtype=np.float32),
            "genres": [["Drama", "Comedy"]] + [[] for _ in items[1:]],
            "history": [[3, 4, 5]] * len(items),
        }
    )
    scores = np.linspace(0.9, 0.1, len(items)).astype(np.float32)
    return LoggedRequest(rid, "ctr", "3", frame, scores, logged_at=pd.Timestamp(at, unit="s", tz="UTC"))


def test_sampling_is_deterministic_and_near_the_rate():
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [sampled(r, 0.1) for r in ids]
    assert picked == [sampled(r, 0.1) for r in ids]
    assert 0.09 < np.mean(picked) < 0.11
    assert all(sampled(r, 1.0) for r in ids[:100]) and not any(sampled(r, 0.0) for r in ids[:100])


def test_batches_are_written_and_read_back_exactly(tmp_path):
    logger = FeatureLogger(FeatureLoggingConfig(batch_rows=6, flush_seconds=60), str(tmp_path))
    requests = [_request(f"r{i}", user=i) for i in range(5)]
    assert all(logger.log(r) for r in requests)
    logger.close()
    assert logger.counters.written_rows == 15 and logger.counters.dropped == 0
    assert logger.counters.written_files == 3  # 6 + 6 rows, then the rest at close
    log = read_feature_log(str(tmp_path))
    assert list(log.request_id.unique()) == [f"r{i}" for i in range(5)]
    first = log[log.request_id == "r0"]
    assert first.item_id.tolist() == [10, 11, 12] and first.position.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(first.score.to_numpy(), requests[0].scores)
    assert [list(g) for g in first.genres] == [["Drama", "Comedy"], [], []]
    assert list(first.history.iloc[0]) == [3, 4, 5] and first.model_version.iloc[0] == "3"


def test_a_partial_batch_is_flushed_after_flush_seconds(tmp_path):
    logger = FeatureLogger(FeatureLoggingConfig(batch_rows=1000, flush_seconds=0.2), str(tmp_path))
    logger.log(_request("only"))
    deadline = time.monotonic() + 10
    while logger.counters.written_rows == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logger.counters.written_rows == 3  # written without close()
    logger.close()


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    logger = FeatureLogger(FeatureLoggingConfig(queue_size=1, batch_rows=1, flush_seconds=60), str(tmp_path))
    request = _request("r")
    slowest = 0.0
    for _ in range(2000):
        start = time.perf_counter()
        logger.log(request)
        slowest = max(slowest, time.perf_counter() - start)
    logger.close()
    c = logger.counters
    assert c.dropped > 0 and c.queued + c.dropped == 2000
    assert c.written_rows == 3 * c.queued
    assert slowest < 0.05


def test_a_failed_write_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log folder should be")
    logger = FeatureLogger(FeatureLoggingConfig(), str(blocker))
    assert logger.log(_request("r"))
    logger.close()
    assert logger.counters.write_errors == 1 and logger.counters.written_rows == 0


def _by_pandas(requests: list[LoggedRequest]) -> pa.Table:
    """The reference: each request's rows as a pandas frame, concatenated, converted by pandas."""
    frames = []
    for r in requests:
        n = len(r.scores)
        meta = pd.DataFrame({"request_id": [r.request_id] * n, "logged_at": pd.DatetimeIndex([r.logged_at] * n).as_unit("us"),
                             "model": [r.model] * n, "model_version": [r.model_version] * n,
                             "position": np.arange(n, dtype=np.int32), "score": np.asarray(r.scores, dtype=np.float32)})
        frames.append(pd.concat([meta, r.features().reset_index(drop=True)], axis=1))
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False).replace_schema_metadata(None)


def test_a_batch_table_equals_pandas_conversion_of_its_rows():
    shared = [7, 8]  # one list object on every row (a request's history), and equal lists that are distinct objects
    first = _request("a", user=1)
    second = LoggedRequest("b", "ctr", None, lambda: pd.DataFrame({
        "user_id": np.array([2, 2], dtype=np.int64), "item_id": np.array([10, 99], dtype=np.int64),
        "gender": [None, "M"], "age": np.array([np.nan, 40.0], dtype=np.float32),
        "genres": [["Drama"], ["Drama"]], "history": [shared, shared], "device": ["mobile", None]}),
        np.array([0.4, 0.2], dtype=np.float32), logged_at=pd.Timestamp(2_000, unit="s", tz="UTC"))
    table = log_table([first, second])
    assert table.equals(_by_pandas([first, second]))
    assert table.column("device").to_pylist() == [None, None, None, "mobile", None]  # a column one request lacks: null
    assert table.column("age").null_count == 1  # NaN is null, as pandas converts it
    assert table.column("history").to_pylist()[3:] == [[7, 8], [7, 8]]
    assert table.column("model_version").to_pylist()[3:] == [None, None]


def test_scores_and_rows_of_different_lengths_are_a_write_error(tmp_path):
    bad = LoggedRequest("r", "ctr", "3", _request("r").frame, np.array([0.5]))
    with pytest.raises(ValueError, match="scores and feature rows"):
        log_table([bad])
    logger = FeatureLogger(FeatureLoggingConfig(), str(tmp_path))
    logger.log(bad)
    logger.log(_request("good"))
    logger.close()
    assert logger.counters.write_errors == 1 and logger.counters.written_rows == 0  # one batch: both lost, and said


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="serve.feature_logging.sample_rate"):
        FeatureLoggingConfig(sample_rate=1.5)


def _log() -> pd.DataFrame:
    return pd.concat([_request("a", user=1, at=1_000).rows(), _request("b", user=2, at=2_000).rows()], ignore_index=True)


def test_labels_join_by_request_id():
    labels = pd.DataFrame({"request_id": ["a", "b", "zz"], "item_id": [11, 10, 10], "timestamp": [1_010, 2_500, 5], "label": [1, 1, 1]})
    rows = join_labels(_log(), labels)
    assert rows.loc[rows.request_id == "a", "label"].tolist() == [0, 1, 0]
    assert rows.loc[rows.request_id == "b", "label"].tolist() == [1, 0, 0]


def test_labels_join_by_user_item_within_the_window():
    labels = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "item_id": [12, 10, 11, 12],
            # a click 100 s after request a; one before it (not caused by it); one in b's window; one after it
            "timestamp": [1_100, 900, 2_000 + 3_000, 2_000 + 90_000],
            "label": [1, 1, 1, 1],
        }
    )
    rows = join_labels(_log(), labels, window=pd.Timedelta(hours=1))
    assert rows.loc[rows.request_id == "a", "label"].tolist() == [0, 0, 1]
    assert rows.loc[rows.request_id == "b", "label"].tolist() == [0, 1, 0]
    assert len(rows) == 6 and rows.drop(columns="label").equals(_log())


def test_labels_with_and_without_a_request_id_join_each_their_way():
    labels = pd.DataFrame({"request_id": ["a", None], "user_id": [1, 2], "item_id": [11, 12],
                           "timestamp": [1_010, 2_100], "label": [1, 1]})
    rows = join_labels(_log(), labels)
    assert rows.loc[rows.request_id == "a", "label"].tolist() == [0, 1, 0]
    assert rows.loc[rows.request_id == "b", "label"].tolist() == [0, 0, 1]  # user 2's click on 12, by its impression


def test_a_click_is_credited_to_the_latest_impression_before_it():
    log = pd.concat([_request("first", user=1, at=1_000).rows(), _request("second", user=1, at=1_500).rows()], ignore_index=True)
    clicks = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "timestamp": [1_600, 1_200], "label": [1, 1]})
    rows = join_labels(log, clicks)
    assert rows.loc[rows.request_id == "first", "label"].tolist() == [0, 1, 0]  # item 11 at 1200: only "first" was served
    assert rows.loc[rows.request_id == "second", "label"].tolist() == [1, 0, 0]  # item 10 at 1600: "second" is the latest
