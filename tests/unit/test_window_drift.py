"""Skew and drift of online windows (mlsys.monitor.drift), no Ray: a planted shift is found, a steady stream is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys.data.statistics import compute_table, infer_kinds
from mlsys.errors import ConfigError
from mlsys.monitor.config import MonitorConfig
from mlsys.monitor.drift import WindowReport, judge
from mlsys.monitor.online import SCORE, Window


def _stats(seed: int, n: int = 4000, female: float = 0.3, score_shift: float = 0.0, name: str = ""):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(1, 900, n), "gender": np.where(rng.random(n) < female, "F", "M"),
                          "age": rng.normal(33, 11, n), SCORE: np.clip(rng.beta(2, 5, n) + score_shift, 0, 1)})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return compute_table(table, infer_kinds(table.schema, categorical=("user_id",)), name=name)


def _window(start: float, **kw) -> Window:
    stats = _stats(int(start), **kw)
    return Window("ctr", "1", start, start + 60, requests=stats.rows // 10, rows=stats.rows, replicas=["r"], parts=[], statistics=stats)


def test_a_category_share_moved_by_20_points_shows_in_skew_and_drift_and_nothing_else_moves():
    cfg = MonitorConfig()
    training = _stats(0, n=20000, name="train")
    steady = judge(_window(60), training, _window(0), cfg).signals()
    assert steady["skew.linf.gender"] < 0.03 and steady["drift.linf.gender"] < 0.03 and steady["drift.psi.age"] < 0.05
    shifted = judge(_window(120, female=0.5), training, _window(60), cfg)
    assert shifted.skew["gender"]["linf"] == pytest.approx(0.2, abs=0.03)
    assert shifted.drift["gender"]["linf"] == pytest.approx(0.2, abs=0.03)
    assert shifted.drift["age"]["psi"] < 0.05 and shifted.drift[SCORE]["psi"] < 0.05
    signals = shifted.signals()
    assert signals["skew.linf.gender"] == shifted.skew["gender"]["linf"] and signals["skew.max.linf"] >= signals["skew.linf.gender"]
    assert "skew.linf.user_id" not in signals  # ids are ignored by default
    assert signals["window.rows"] == 4000.0 and shifted.baseline == "train" and shifted.previous == 60


def test_prediction_drift_is_the_scores_against_the_previous_window():
    report = judge(_window(120, score_shift=0.3), None, _window(60), MonitorConfig())
    assert report.drift[SCORE]["psi"] > 0.25 and report.skew == {}
    signals = report.signals()
    assert signals["prediction_drift.psi"] == report.drift[SCORE]["psi"] and "drift.psi.score" not in signals
    assert signals["drift.max.psi"] < report.drift[SCORE]["psi"]  # the maxima are over features, not scores


def test_a_small_window_is_kept_but_not_judged():
    tiny = judge(_window(0, n=50), _stats(1), None, MonitorConfig())
    assert not tiny.judged and set(tiny.signals()) == {"window.rows", "window.requests"}
    report = judge(_window(60), _stats(2, n=20000), None, MonitorConfig())
    assert WindowReport.from_dict(report.to_dict()) == report


@pytest.mark.parametrize("override, key", [({"grace_s": -1}, "monitor.grace_s"), ({"min_rows": -1}, "monitor.min_rows"),
                                           ({"interval_s": 0}, "monitor.interval_s")])
def test_bad_monitor_config_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key):
        MonitorConfig(**override)
