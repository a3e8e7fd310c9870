"""Online statistics (mlsys.monitor.online): replicas' window parts merged exactly, no Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys.data.statistics import FeatureKind, compute_table, infer_kinds
from mlsys.errors import ConfigError
from mlsys.monitor.config import OnlineStatisticsConfig
from mlsys.monitor.online import SCORE, WindowSketcher, merge_windows, read_windows, window_path, window_start


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _frame(rng, n: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": rng.integers(1, 50, n), "item_id": rng.integers(1, 500, n),
                         "gender": rng.choice(["M", "F"], n), "age": rng.integers(18, 70, n).astype(float),
                         "genres": [list(rng.integers(0, 18, rng.integers(1, 4))) for _ in range(n)]})


def _requests(seed: int, count: int):
    rng = np.random.default_rng(seed)
    return [(f"r{seed}-{i}", _frame(rng, int(rng.integers(1, 20)))) for i in range(count)]


def test_two_replicas_windows_merge_exactly_into_what_one_pass_computes(tmp_path):
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05, rows_per_request=0)  # every row: exact
    clock = Clock(1_000_030.0)  # in the window [1000020, 1000080)
    start = window_start(clock.t, 60)
    kinds = {"age": FeatureKind.numeric, "gender": FeatureKind.categorical}
    replicas = [WindowSketcher(cfg, str(tmp_path), "ctr", kinds_of=lambda v: kinds, replica=f"r{i}", clock=clock) for i in range(2)]
    everything = []
    for i, sketcher in enumerate(replicas):
        for request_id, frame in _requests(i, 40):
            scores = np.linspace(0.1, 0.9, len(frame))
            assert sketcher.observe(request_id, "3", lambda f=frame: f, scores)
            everything.append(frame.assign(**{SCORE: scores}))
    for sketcher in replicas:
        sketcher.flush()
    assert merge_windows(tmp_path, "ctr", grace_s=10, now=start + 65) == []  # within the grace: not yet
    [window] = merge_windows(tmp_path, "ctr", grace_s=10, now=start + 71)
    assert (window.version, window.start, window.end, window.replicas) == ("3", start, start + 60, ["r0", "r1"])
    assert window.requests == 80 and window.rows == sum(len(f) for f in everything)
    whole = pd.concat(everything, ignore_index=True)
    table = pa.Table.from_pandas(whole, preserve_index=False)
    expected = compute_table(table, {**infer_kinds(table.schema, categorical=("user_id", "item_id")), **kinds, SCORE: FeatureKind.numeric})
    got = window.statistics
    for name in ("age", SCORE):  # moments merge exactly (to float rounding)
        a, b = got.features[name], expected.features[name]
        assert (a.count, a.missing, a.min, a.max, a.zeros) == (b.count, b.missing, b.min, b.max, b.zeros)
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-12)
    assert got.features["gender"].top == expected.features["gender"].top  # exact counts below the sketch's size
    assert got.features["gender"].kind is FeatureKind.categorical and got.features["user_id"].kind is FeatureKind.categorical
    assert got.features["genres"].kind is FeatureKind.list
    [read] = read_windows(tmp_path, "ctr")
    assert read.rows == window.rows and read.statistics.features["age"].mean == got.features["age"].mean
    assert not any((tmp_path / "ctr" / "parts").rglob("*.json"))  # held by the window: removed
    for sketcher in replicas:
        sketcher.close()


def test_a_late_part_merges_into_its_window_and_nothing_counts_twice(tmp_path):
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05)
    clock = Clock(600.0)
    early, late = (WindowSketcher(cfg, str(tmp_path), "ctr", replica=r, clock=clock) for r in ("early", "late"))
    for sketcher, seed in ((early, 1), (late, 2)):
        for request_id, frame in _requests(seed, 10):
            sketcher.observe(request_id, "1", lambda f=frame: f, np.full(len(frame), 0.5))
    early.flush()
    [first] = merge_windows(tmp_path, "ctr", grace_s=0, now=700)
    late.flush()
    [grown] = merge_windows(tmp_path, "ctr", grace_s=0, now=700)
    assert grown.requests == 20 and grown.rows > first.rows and grown.replicas == ["early", "late"]
    assert merge_windows(tmp_path, "ctr", grace_s=0, now=700) == []  # nothing new: nothing written
    saved = json.loads(window_path(tmp_path, "ctr", "1", 600).read_text())
    assert saved["requests"] == 20 and len(saved["parts"]) == 2
    [read] = read_windows(tmp_path, "ctr", "1")
    assert read.statistics.features[SCORE].mean == pytest.approx(0.5)
    early.close(), late.close()


def test_windows_follow_the_clock_and_versions_stay_apart(tmp_path):
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05)
    clock = Clock(0.0)
    sketcher = WindowSketcher(cfg, str(tmp_path), "ctr", replica="r", clock=clock)
    (a, fa), (b, fb), (c, fc) = _requests(3, 3)
    sketcher.observe(a, "1", lambda: fa, np.zeros(len(fa)), at=10.0)
    sketcher.observe(b, "2", lambda: fb, np.zeros(len(fb)), at=20.0)  # a canary's version: its own window
    sketcher.observe(c, "1", lambda: fc, np.zeros(len(fc)), at=70.0)  # the next window
    sketcher.close()
    windows = merge_windows(tmp_path, "ctr", grace_s=0, now=1000)
    assert [(w.version, w.start, w.requests) for w in windows] == [("1", 0.0, 1), ("2", 0.0, 1), ("1", 60.0, 1)]


def test_sampling_a_full_queue_and_a_bad_frame_never_raise(tmp_path):
    sketcher = WindowSketcher(OnlineStatisticsConfig(sample_rate=0.0), str(tmp_path), "ctr")
    assert not sketcher.observe("r", "1", lambda: pd.DataFrame(), [])
    assert sketcher.counters.sampled_out == 1
    sketcher.close()
    broken = WindowSketcher(OnlineStatisticsConfig(flush_seconds=0.05), str(tmp_path), "ctr")

    def boom():
        raise RuntimeError("the online store went away")

    broken.observe("r", "1", boom, [0.5])
    broken.flush()
    assert broken.counters.errors == 1 and broken.counters.sketched_requests == 0
    broken.close()


@pytest.mark.parametrize("key, value", [("window_s", 0), ("sample_rate", 1.5), ("queue_size", 0), ("flush_seconds", 0)])
def test_bad_config_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"serve.monitoring.{key}"):
        OnlineStatisticsConfig(**{key: value})


def test_a_sample_of_each_requests_rows_keeps_the_shares(tmp_path):
    """rows_per_request=5: at most 5 rows of each request, drawn at random; a request-level feature's
    share is exact, an item-level one's close, the scores sampled with their rows."""
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05, rows_per_request=5)
    clock = Clock(60.0)
    sketcher = WindowSketcher(cfg, str(tmp_path), "ctr", replica="r", clock=clock)
    rng = np.random.default_rng(0)
    sizes, female, rows = [], 0, 0
    for i in range(400):
        n = int(rng.integers(1, 40))
        gender = "F" if rng.random() < 0.3 else "M"
        frame = pd.DataFrame({"gender": [gender] * n, "year": rng.choice([1990.0, 2000.0], n, p=[0.25, 0.75])})
        scores = np.where(frame.year.to_numpy() == 1990.0, 0.9, 0.1)
        sketcher.observe(f"q{i}", "1", lambda f=frame: f, scores)
        sizes.append(min(n, 5))
        female += (gender == "F") * min(n, 5)
    sketcher.close()
    [window] = merge_windows(tmp_path, "ctr", grace_s=0, now=200)
    assert window.requests == 400 and window.rows == sum(sizes)
    top = dict(window.statistics.features["gender"].top)
    assert top["F"] == female  # the request's own features: every sampled row has them
    year = window.statistics.features["year"]
    assert year.mean == pytest.approx(1997.5, abs=0.6)  # an item-level feature: a uniform sample of the candidates
    assert window.statistics.features[SCORE].mean == pytest.approx(0.1 + 0.8 * (2000 - year.mean) / 10, abs=1e-9)  # rows and scores together
