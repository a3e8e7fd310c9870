"""The evaluation gate's plain cores (no Ray): slices, the paired bootstrap, the blessing,
the pre-release replay, the HTML report, and the candidate-vs-champion evaluation of real packages."""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import ConfigError
from mlsys.evaluate import metrics
from mlsys.evaluate.blessing import BlessingDecision, bless
from mlsys.evaluate.bootstrap import resample_counts, tie_starts, weighted_auc
from mlsys.evaluate.config import BlessingConfig, EvaluateConfig, ReplayConfig
from mlsys.evaluate.replay import LOG_COLUMNS, PreReleaseEstimate, estimate
from mlsys.evaluate.report import write_evaluation_report
from mlsys.evaluate.slices import Evaluation, MetricRow, compare, mlflow_key, slice_frame

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


# -- slices ------------------------------------------------------------------------------------------


def _frames(seed: int = 0, n_train: int = 600, n_eval: int = 300):
    rng = np.random.default_rng(seed)
    train = pd.DataFrame({"user_id": rng.zipf(1.6, n_train) % 40, "item_id": rng.zipf(1.4, n_train) % 60})
    evaluation = pd.DataFrame({
        "user_id": rng.integers(0, 50, n_eval),  # 40..49 never trained
        "item_id": rng.integers(0, 70, n_eval),
        "label": rng.integers(0, 2, n_eval).astype(np.float32),
        "gender": rng.choice(["F", "M", None], n_eval),
        "genres": [["a", "b"]] * n_eval,  # a list column: not a slice
        "age": rng.random(n_eval),  # numeric: not a slice
    })
    return evaluation, train


def _cuts_oracle(entity_counts: list[int], buckets: int) -> list[int]:
    """Brute force: for each j, the smallest count c with at least j/buckets of the events at counts <= c."""
    total, cuts = sum(entity_counts), set()
    for j in range(1, buckets):
        c = min(c for c in entity_counts if sum(x for x in entity_counts if x <= c) >= j / buckets * total - 1e-9)
        if c < max(entity_counts):
            cuts.add(c)
    return sorted(cuts)


def _range(label: str) -> tuple[int, float]:
    if label.endswith("+"):
        return int(label[:-1]), math.inf
    lo, _, hi = label.partition("-")
    return int(lo), int(hi or lo)


@pytest.mark.parametrize("seed,buckets", [(0, 3), (1, 4), (2, 2)])
def test_slices_match_a_brute_force_oracle(seed, buckets):
    evaluation, train = _frames(seed)
    slices = slice_frame(evaluation, train, EvaluateConfig(slices=["gender"], buckets=buckets))
    assert list(slices.columns) == ["user_activity", "item_popularity", "gender"] and slices.index.equals(evaluation.index)
    for dim, key in (("user_activity", "user_id"), ("item_popularity", "item_id")):
        per_entity = [int((train[key] == v).sum()) for v in sorted(set(train[key]))]
        cuts = _cuts_oracle(per_entity, buckets)
        labels = list(slices[dim].cat.categories)
        assert len(labels) == len(cuts) + 1
        for i, row in evaluation.iterrows():
            count = int((train[key] == row[key]).sum())  # users absent from train: 0, the lowest bucket
            lo, hi = _range(slices.loc[i, dim])
            assert lo <= count <= hi
            assert labels.index(slices.loc[i, dim]) == sum(count > c for c in cuts)
        assert labels[0].startswith("0-") or labels[0].startswith("0+")  # some eval entities never trained
    assert set(slices["gender"]) == {"F", "M", "(missing)"}


def test_buckets_are_readable_ranges_of_about_equal_training_events():
    train = pd.DataFrame({"user_id": np.repeat(np.arange(1, 31), np.arange(1, 31)), "item_id": 0})  # user u: u events
    evaluation = pd.DataFrame({"user_id": np.arange(1, 31), "item_id": 0, "label": 0.0})
    column = slice_frame(evaluation, train, EvaluateConfig(buckets=3))["user_activity"]
    assert list(column.cat.categories) == ["1-18", "19-25", "26+"]  # 1+..+18 = 171 >= 465/3, 1+..+25 = 325 >= 2*465/3
    events = pd.Series(np.arange(1, 31)).groupby(column.to_numpy()).sum(numeric_only=True)
    assert events.min() / events.max() > 0.7  # 171, 154, 140 of 465 events


def test_an_unknown_slice_names_the_key_and_the_categorical_columns():
    evaluation, train = _frames()
    with pytest.raises(ConfigError) as e:
        slice_frame(evaluation, train, EvaluateConfig(slices=["occupation"]))
    assert "evaluate.slices" in str(e.value) and "occupation" in str(e.value) and "['gender']" in str(e.value)


# -- the bootstrap ---------------------------------------------------------------------------------


def test_weighted_auc_is_the_auc_of_the_resample_it_weighs():
    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 200), np.round(rng.random(200), 1)  # coarse: many ties
    order = np.argsort(scores, kind="mergesort")
    counts = next(resample_counts(200, 5, seed=1))
    got = weighted_auc(labels[order] > 0.5, tie_starts(scores[order]), counts[order])
    for b in range(5):
        drawn = np.repeat(np.arange(200), counts[:, b].astype(int))
        assert got[b] == pytest.approx(metrics.auc(labels[drawn], scores[drawn]), abs=1e-12)


def _scored(n: int, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, n), "item_id": rng.integers(0, 80, n),
                          "label": (z + rng.normal(size=n) > 0.3).astype(np.float32), "gender": rng.choice(["F", "M"], n)})
    champion = 1 / (1 + np.exp(-z))
    candidate = 1 / (1 + np.exp(-(z + noise * rng.normal(size=n))))
    return frame, {"candidate": candidate, "champion": champion}


def _evaluate(n: int, seed: int = 0, **cfg):
    frame, scores = _scored(n, seed)
    cfg = EvaluateConfig(slices=["gender"], **cfg)
    train = frame.sample(frac=1.0, replace=True, random_state=seed)
    return compare(frame, slice_frame(frame, train, cfg), scores, cfg)


def test_intervals_contain_the_point_estimate_and_narrow_with_more_rows():
    small, large = _evaluate(400), _evaluate(6400)
    for metric in ("auc", "logloss", "calibration"):
        for ev in (small, large):
            for slice_, bucket in ev.buckets:
                row = ev.row("candidate", metric, slice_, bucket)
                assert row.low <= row.value <= row.high, (metric, slice_, bucket)
        width = lambda ev: ev.row("candidate", metric).high - ev.row("candidate", metric).low  # noqa: E731
        assert width(large) < 0.5 * width(small)  # about 1/sqrt(16)
    assert math.isnan(small.row("candidate", "user_auc").low)  # no CI for user_auc
    assert small.value("candidate", "auc") == pytest.approx(
        metrics.auc(*(lambda f, s: (f["label"].to_numpy(), s["candidate"]))(*_scored(400))))


def test_deltas_are_paired():
    frame, scores = _scored(3000, seed=5, noise=0.3)
    cfg = EvaluateConfig(slices=["gender"])
    slices = slice_frame(frame, frame, cfg)
    same = compare(frame, slices, {"candidate": scores["champion"], "champion": scores["champion"]}, cfg)
    assert same.row("delta", "auc").low == same.row("delta", "auc").high == 0.0
    ev = compare(frame, slices, scores, cfg)
    delta, cand = ev.row("delta", "auc", "gender", "F"), ev.row("candidate", "auc", "gender", "F")
    assert delta.value == pytest.approx(cand.value - ev.value("champion", "auc", "gender", "F"))
    # the same resamples for both models: the difference varies far less than either model's AUC
    assert delta.high - delta.low < 0.6 * (cand.high - cand.low)
    assert ev.models == ("candidate", "champion")


def test_no_bootstrap_gives_nan_intervals_and_the_evaluation_round_trips_through_json():
    ev = _evaluate(500, bootstrap=0)
    assert all(math.isnan(r.low) and math.isnan(r.high) for r in ev.rows)
    back = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict(), allow_nan=False)))
    assert [(r.model, r.slice, r.bucket, r.metric, r.examples) for r in back.rows] == \
           [(r.model, r.slice, r.bucket, r.metric, r.examples) for r in ev.rows]
    assert back.value("champion", "auc", "gender", "M") == ev.value("champion", "auc", "gender", "M")
    flat = ev.flat_metrics("candidate")
    assert flat["auc"] == ev.value("candidate", "auc") and "auc.gender.F" in flat
    assert mlflow_key("auc.user_activity.81+") == "auc.user_activity.81plus"
    table = ev.table()
    assert "candidate" in table.splitlines()[0] and "delta" in table.splitlines()[0]
    assert any(line.startswith("gender=F") and "auc" in line for line in table.splitlines())


def test_compare_of_20k_rows_and_30_buckets_takes_seconds():
    import time

    rng = np.random.default_rng(0)
    frame, scores = _scored(20_000)
    frame["occupation"] = rng.choice([f"o{i}" for i in range(21)], len(frame))
    cfg = EvaluateConfig(slices=["gender", "occupation"], bootstrap=200)
    slices = slice_frame(frame, frame.sample(frac=4.0, replace=True, random_state=0), cfg)
    start = time.perf_counter()
    ev = compare(frame, slices, scores, cfg)
    assert len(ev.buckets) >= 28 and time.perf_counter() - start < 10  # 1.3-2.2 s on the 2 shared cores; the bound is 5 s


# -- blessing --------------------------------------------------------------------------------------


def _rows(model: str, values: dict, slice_: str = "overall", bucket: str = "all", examples: int = 10_000):
    return [MetricRow(model, slice_, bucket, m, v, math.nan, math.nan, examples) for m, v in values.items()]


def _ev(candidate: dict, champion: dict | None = None, slices=()) -> Evaluation:
    """``slices``: (slice, bucket, examples, candidate values, champion values)."""
    rows = _rows("candidate", candidate) + (_rows("champion", champion) if champion else [])
    for slice_, bucket, examples, cand, champ in slices:
        rows += _rows("candidate", cand, slice_, bucket, examples) + _rows("champion", champ, slice_, bucket, examples)
    return Evaluation(tuple(rows))


CFG = BlessingConfig(thresholds={"auc": 0.70}, max_regression={"auc": 0.002, "logloss": 0.005},
                     max_slice_regression={"auc": 0.02}, min_slice_examples=500)


def test_the_first_model_is_blessed_by_the_value_thresholds_alone():
    decision = bless(_ev({"auc": 0.72, "logloss": 0.9}), CFG, None)
    assert decision.blessed and {c.kind for c in decision.checks} == {"threshold"}
    assert decision.reason.startswith("blessed: auc 0.72 >= 0.7") and "\n" not in decision.reason
    refused = bless(_ev({"auc": 0.65, "logloss": 0.5}), CFG, None)
    assert not refused.blessed
    assert refused.reason == "not blessed: auc overall (10,000 examples): 0.65 < 0.7 (evaluate.blessing.thresholds.auc)"


def test_a_refusal_names_metric_slice_value_and_threshold_in_one_line():
    ev = _ev({"auc": 0.78, "logloss": 0.50}, {"auc": 0.776, "logloss": 0.50},
             [("user_activity", "1-23", 812, {"auc": 0.701}, {"auc": 0.733})])
    decision = bless(ev, CFG, champion_version="3")
    assert not decision.blessed and decision.champion_version == "3"
    assert decision.reason == ("not blessed: auc on user_activity=1-23 (812 examples): 0.701 < champion 0.733 - 0.02 "
                               "(evaluate.blessing.max_slice_regression.auc)")
    assert [c.passed for c in decision.checks] == [True, True, True, False]
    assert BlessingDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


def test_a_blessing_summarises_every_check_it_passed():
    ev = _ev({"auc": 0.781, "logloss": 0.50}, {"auc": 0.776, "logloss": 0.50},
             [("gender", b, 5000, {"auc": 0.78}, {"auc": 0.79}) for b in ("F", "M")])
    decision = bless(ev, CFG, champion_version="3")
    assert decision.blessed
    assert decision.reason == ("blessed: auc 0.781 >= 0.7; no worse than champion v3 (auc 0.776, logloss 0.5) "
                               "by more than auc 0.002, logloss 0.005 overall and on 2 slices")
    slices_only = BlessingConfig(thresholds={}, max_regression={}, max_slice_regression={"auc": 0.02})
    assert bless(ev, slices_only, "3").reason == "blessed: no worse than champion v3 on 2 slices"


def test_nan_values_are_skipped_not_failed():
    ev = _ev({"auc": 0.78, "logloss": 0.5}, {"auc": 0.77, "logloss": 0.5}, [("gender", "F", 900, {"auc": math.nan}, {"auc": 0.9}),
                                            ("gender", "M", 900, {"auc": 0.9}, {"auc": math.nan})])
    decision = bless(ev, CFG, "1")
    assert decision.blessed and all(c.slice == "overall" for c in decision.checks)
    assert bless(_ev({"auc": math.nan}), CFG, None).blessed


def test_min_slice_examples_is_honoured():
    ev = _ev({"auc": 0.78, "logloss": 0.5}, {"auc": 0.78, "logloss": 0.5}, [("gender", "F", 499, {"auc": 0.5}, {"auc": 0.9})])
    assert bless(ev, CFG, "1").blessed
    tighter = BlessingConfig(thresholds={}, max_slice_regression={"auc": 0.02}, min_slice_examples=499)
    assert "on gender=F (499 examples)" in bless(ev, tighter, "1").reason


def test_logloss_is_better_lower():
    cfg = BlessingConfig(thresholds={"logloss": 0.6}, max_regression={"logloss": 0.005}, max_slice_regression={})
    assert bless(_ev({"logloss": 0.55}, {"logloss": 0.60}), cfg, "2").blessed  # lower than the champion: better
    worse = bless(_ev({"logloss": 0.56}, {"logloss": 0.55}), cfg, "2")
    assert worse.reason == ("not blessed: logloss overall (10,000 examples): 0.56 > champion 0.55 + 0.005 "
                            "(evaluate.blessing.max_regression.logloss)")
    assert bless(_ev({"logloss": 0.61}), cfg, None).reason.endswith("0.61 > 0.6 (evaluate.blessing.thresholds.logloss)")


# -- the pre-release replay ------------------------------------------------------------------------


def _log(requests: int = 5, candidates: int = 4, seed: int = 0) -> pd.DataFrame:
    """A feature log as serving writes it: LoggedRequest rows, newest request first in the frame."""
    from mlsys.features.feature_log import LoggedRequest

    rng = np.random.default_rng(seed)
    parts = []
    for r in reversed(range(requests)):  # file order is not time order
        served = rng.random(candidates)
        frame = pd.DataFrame({"user_id": r, "item_id": np.arange(candidates), "x": served})
        parts.append(LoggedRequest(f"req-{r}", "ctr", "3", frame, served, pd.Timestamp(1_700_000_000 + r, unit="s", tz="UTC")).rows())
    return pd.concat(parts, ignore_index=True)


def test_replaying_the_served_scores_changes_nothing():
    seen = []

    def score(rows):
        seen.append(list(rows.columns))
        return rows["x"].to_numpy()

    est = estimate(_log(), score, ReplayConfig(requests=3, top_k=2))
    assert seen == [["user_id", "item_id", "x"]]  # the raw features only, one call
    assert (est.requests, est.rows, est.served_version) == (3, 12, "3")
    assert est.psi == pytest.approx(0.0, abs=1e-9) and est.top_k_overlap == 1.0 and est.top_item_changed == 0.0
    assert est.breaches == () and PreReleaseEstimate.from_dict(json.loads(json.dumps(est.to_dict()))) == est


def test_a_reversed_ranking_keeps_what_the_hand_count_says():
    log = _log(requests=6, candidates=4)
    est = estimate(log, lambda rows: 1.0 - rows["x"].to_numpy(), ReplayConfig(requests=100, top_k=3))
    # 4 candidates: the reversed top 3 keeps 2 of the served top 3; the best item always changes
    assert est.requests == 6 and est.top_k_overlap == pytest.approx(2 / 3) and est.top_item_changed == 1.0
    assert estimate(log, lambda rows: 1.0 - rows["x"].to_numpy(), ReplayConfig(top_k=2)).top_k_overlap == 0.0


def test_the_most_recent_requests_are_replayed():
    got = []
    estimate(_log(requests=5), lambda rows: got.append(sorted(set(rows["user_id"]))) or rows["x"].to_numpy(),
             ReplayConfig(requests=2))
    assert got == [[3, 4]]


def test_breaches_name_the_number_and_the_threshold():
    cfg = ReplayConfig(top_k=3, max_psi=0.01, min_top_k_overlap=0.9, max_top_item_changed=0.5)
    est = estimate(_log(requests=20), lambda rows: 1.0 - rows["x"].to_numpy(), cfg)
    assert len(est.breaches) == 3 and not est.passed
    assert est.breaches[1] == "top-3 overlap 0.667 < evaluate.replay.min_top_k_overlap=0.9"
    assert est.breaches[2] == "top item changed on 100.0% of requests > evaluate.replay.max_top_item_changed=0.5"
    assert "evaluate.replay.max_psi=0.01" in est.breaches[0] and est.breaches[0] in est.line()


def test_an_empty_log_gives_no_estimate_and_the_log_columns_are_the_feature_logs():
    from mlsys.features import feature_log

    assert estimate(pd.DataFrame(columns=list(LOG_COLUMNS)), lambda rows: rows, ReplayConfig()) is None
    assert LOG_COLUMNS == feature_log.LOG_COLUMNS


def test_serving_uses_the_evaluate_layers_overlap_and_psi():
    from mlsys.serve import release

    assert release.top_k_overlap is metrics.top_k_overlap and release.score_psi is metrics.score_psi


# -- the report ------------------------------------------------------------------------------------


def test_the_report_leads_with_the_decision_and_its_reason(tmp_path):
    ev = _evaluate(800)
    decision = bless(ev, BlessingConfig(thresholds={"auc": 0.99}), "3")
    est = estimate(_log(), lambda rows: rows["x"].to_numpy(), ReplayConfig())
    page = write_evaluation_report(ev, decision, est, tmp_path / "report.html", "Evaluation of ctr version 4").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Evaluation of ctr version 4" in page
    assert html.escape(decision.reason) in page and page.index("Not blessed") < page.index("Pre-release estimate")
    assert "gender=F" in page and "top-10 overlap" in page and "plotly" in page
    assert "no logged requests" in write_evaluation_report(ev, decision, None, tmp_path / "r2.html").read_text()


# -- real packages ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """A tiny trained-like package (the candidate) and a valid one whose model answers 0.5 (the champion)."""
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.registry.package import write_package
    from tests.packages import variant
    from tests.schemas import movielens_like
    from tests.unit.test_package import ITEMS, MODEL_CONFIG, USERS, _model, _train_frame

    root = tmp_path_factory.mktemp("gate")
    train, evaluation = _train_frame(400), _train_frame(300).sample(frac=1.0, random_state=1)
    pre = CtrPreprocessor(movielens_like(history_length=3, multi_hot_length=2), min_count=1).fit_frame(train)
    candidate = write_package(root / "candidate", model=_model(pre), model_config=MODEL_CONFIG, preprocessor=pre,
                              users=USERS, items=ITEMS, lineage={})
    champion = variant(str(candidate), root / "champion", "constant")
    train.to_parquet(root / "train.parquet"), evaluation.to_parquet(root / "eval.parquet")
    return str(candidate), champion, str(root / "train.parquet"), str(root / "eval.parquet")


def test_evaluate_candidate_scores_both_packages_on_the_same_rows(packages):
    from mlsys.evaluate.evaluation import evaluate_candidate, evaluate_package

    candidate, champion, train, eval_ = packages
    cfg = EvaluateConfig(slices=["gender", "occupation"], bootstrap=50)
    ev = evaluate_candidate(candidate, champion, train, eval_, cfg)
    assert ev.models == ("candidate", "champion") and ev.examples() == 300
    assert ev.value("candidate", "auc") == pytest.approx(evaluate_package(candidate, eval_)["auc"])
    assert ev.value("champion", "auc") == 0.5 and ev.value("champion", "calibration") == pytest.approx(
        0.5 / pd.read_parquet(eval_)["label"].mean())
    assert {s for s, _ in ev.buckets} == {"overall", "user_activity", "item_popularity", "gender", "occupation"}
    first = evaluate_candidate(candidate, None, train, eval_, cfg)
    assert first.models == ("candidate",) and bless(first, BlessingConfig(thresholds={}), None).blessed


def test_a_real_package_replays_its_own_log_unchanged(packages):
    from mlsys.features.feature_log import LoggedRequest
    from mlsys.registry.package import read_package
    from mlsys.registry.scoring import PackageScorer

    package = read_package(packages[0])
    scorer = PackageScorer(package)
    frame = pd.read_parquet(packages[3])[list(package.preprocessor.request_columns)]
    log = pd.concat([LoggedRequest(f"r{u}", "ctr", "7", rows, scorer.score(rows)).rows()
                     for u, rows in frame.groupby("user_id")], ignore_index=True)
    est = estimate(log, scorer.score, ReplayConfig())
    assert est.psi == pytest.approx(0.0, abs=1e-9) and est.top_k_overlap == 1.0 and est.top_item_changed == 0.0
    constant = PackageScorer(read_package(packages[1]))
    assert estimate(log, constant.score, ReplayConfig(max_psi=0.1)).breaches
