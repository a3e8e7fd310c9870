"""The label log of ``POST /v1/events``: one flushed line per label, per replica; read back with the
label files users bring (Parquet, CSV), a line cut short by a crash skipped."""

import time

import pandas as pd

from mlsys.monitor.labels import Label, LabelLog, labels_dir, read_labels


def test_labels_appended_by_two_replicas_read_back_as_one_table(tmp_path):
    now = time.time()
    a, b = LabelLog(str(tmp_path), "ctr", replica="a"), LabelLog(str(tmp_path), "ctr", replica="b")
    a.append(Label(1, 10, 1, now, "req-1"))
    b.append(Label(2, 20, 0, now + 1, "req-2"))
    a.append(Label(3, 30, 1, now + 2))
    files = sorted(p.name for p in labels_dir(str(tmp_path), "ctr").rglob("*.jsonl"))
    assert files == ["a.jsonl", "b.jsonl"] and a.written == 2
    labels = read_labels(str(labels_dir(str(tmp_path), "ctr"))).sort_values("user_id").reset_index(drop=True)
    assert labels.user_id.tolist() == [1, 2, 3] and labels.label.tolist() == [1, 0, 1]
    assert labels.request_id.tolist()[:2] == ["req-1", "req-2"] and pd.isna(labels.request_id[2])


def test_a_torn_last_line_is_skipped_and_other_formats_are_read_alike(tmp_path):
    log = LabelLog(str(tmp_path), "ctr", replica="r")
    log.append(Label(1, 10, 1, 1_000.0))
    [path] = labels_dir(str(tmp_path), "ctr").rglob("*.jsonl")
    with path.open("a") as f:
        f.write('{"user_id": 2, "item_')  # the replica died mid-write: never acknowledged
    assert read_labels(str(path)).user_id.tolist() == [1]
    assert "request_id" not in read_labels(str(path)).columns  # no ids at all: they join by user and item
    pd.DataFrame({"user_id": [5], "item_id": [50], "timestamp": [2_000], "label": [1]}).to_parquet(tmp_path / "more.parquet")
    assert sorted(read_labels(str(tmp_path)).user_id.tolist()) == [1, 5]
    assert read_labels(str(tmp_path / "missing")) is None
