"""Online learning without a cluster: a real package, feature-log rows as serving writes them, labels
by request id. After users start clicking one item, the updates rank it higher and beat the static
model on the new traffic; rows are used once (across a restart); the gate refuses what it must."""

import shutil
import uuid

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import ConfigError
from mlsys.features.feature_log import LoggedRequest
from mlsys.monitor.config import OnlineLearningConfig
from mlsys.monitor.learning import OnlineLearner, _inputs, gate, scores_of
from tests.unit.test_package import ITEMS, MODEL_CONFIG, USERS, _model, _train_frame

HOT = 3  # the item users suddenly click


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.registry.package import read_package, write_package
    from tests.schemas import movielens_like

    pre = CtrPreprocessor(movielens_like(history_length=3, multi_hot_length=2), min_count=1).fit_frame(_train_frame(400))
    path = write_package(tmp_path_factory.mktemp("online") / "v1", model=_model(pre), model_config=MODEL_CONFIG, preprocessor=pre,
                         users=USERS, items=ITEMS, lineage={"eval": "eval.parquet"})
    return read_package(str(path))


def _traffic(rng, start: float, requests: int, hot: bool):
    """Feature-log rows (every user sees items 1..10) and the clicks on them."""
    users, items = USERS.set_index("user_id"), ITEMS.set_index("item_id")
    frames, labels = [], []
    for i in range(requests):
        user = int(rng.integers(1, 6))
        u = users.loc[user]
        candidates = ITEMS.item_id.to_numpy()
        rows = pd.DataFrame({"user_id": user, "item_id": candidates, "gender": u.gender, "occupation": u.occupation, "age": u.age,
                             "year": items.loc[candidates, "year"].to_numpy(dtype=np.float64), "genres": list(items.loc[candidates, "genres"]),
                             "history": [list(u.history)] * len(candidates)})
        request_id = uuid.UUID(int=int(rng.integers(0, 2**63))).hex
        at = pd.Timestamp(start + i * 0.01, unit="s", tz="UTC")
        frames.append(LoggedRequest(request_id, "ctr", "1", rows, np.full(len(rows), 0.5), logged_at=at).rows())
        p = np.where((candidates == HOT) & hot, 0.9, 0.05)
        for item in candidates[rng.random(len(candidates)) < p]:
            labels.append({"request_id": request_id, "user_id": user, "item_id": int(item), "timestamp": start + i * 0.01 + 1, "label": 1})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(labels)


class Registry:
    """What the api layer's publish does, in a folder: each pushed package becomes the next version."""

    def __init__(self, root, package):
        self.root, self.versions = root, {"1": package}
        self.current = "1"

    def base(self):
        return self.current, self.versions[self.current]

    def publish(self, path, update):
        from mlsys.registry.package import read_package

        version = str(len(self.versions) + 1)
        kept = shutil.copytree(path, self.root / f"v{version}")
        self.versions[version], self.current = read_package(str(kept)), version
        return version, True, f"pushed: online is version {version}"


def _hot_rank(package) -> float:
    """The hot item's mean rank (1 = first) among the 10 candidates, over every user."""
    rows, _ = _traffic(np.random.default_rng(99), 0, 50, hot=False)
    scores = scores_of(package.torch_model(), _inputs(package, rows)).reshape(-1, 10)
    return float((scores > scores[:, [HOT - 1]]).sum(axis=1).mean() + 1)


def test_after_users_start_clicking_an_item_updates_rank_it_higher_and_beat_the_static_model(base, tmp_path):
    from mlsys.evaluate.metrics import auc

    rng = np.random.default_rng(0)
    log, labels = _traffic(rng, 1_000, 300, hot=False)
    source = {"log": log, "labels": labels}
    registry = Registry(tmp_path, base)
    cfg = OnlineLearningConfig(enabled=True, min_rows=2000, min_new_rows=500, every_s=60, epochs=3, lr=0.02, batch_size=256)
    learner = OnlineLearner(cfg, str(tmp_path / "online.json"), lambda: (source["log"], source["labels"]), registry.base,
                            registry.publish, attribution_s=5)
    assert learner.consider(now=999) is None  # the first pass: it learns from what is served from now on
    assert learner.consider(now=1_000) is None  # nothing labelled yet (served less than attribution_s ago)
    first = learner.consider(now=1_100)
    assert first is not None and first.rows == 3000 and first.train_rows + first.holdout_rows == 3000
    assert learner.consider(now=1_101) is None  # its rows are used: nothing new

    static_rank, ranks, updates = _hot_rank(base), [], []
    for k in range(3):  # the change: users now click item 3
        start = 2_000 + 1_000 * k
        new_log, new_labels = _traffic(rng, start, 300, hot=True)
        source["log"], source["labels"] = pd.concat([source["log"], new_log]), pd.concat([source["labels"], new_labels])
        update = learner.consider(now=start + 100)
        assert update is not None and update.rows == 3000, update
        updates.append(update)
        ranks.append(_hot_rank(registry.versions[registry.current]))
    assert any(u.pushed for u in updates), [u.reason for u in updates]
    assert min(ranks) < static_rank - 2, (static_rank, ranks)  # within 3 updates the hot item climbs
    fresh, fresh_labels = _traffic(np.random.default_rng(7), 9_000, 200, hot=True)
    from mlsys.features.feature_log import join_labels

    fresh = join_labels(fresh, fresh_labels)
    latest = registry.versions[registry.current]
    y = fresh.label.to_numpy()
    online_auc = auc(y, scores_of(latest.torch_model(), _inputs(latest, fresh)))
    static_auc = auc(y, scores_of(base.torch_model(), _inputs(base, fresh)))
    assert online_auc > static_auc + 0.05, (online_auc, static_auc)

    restarted = OnlineLearner(cfg, str(tmp_path / "online.json"), lambda: (source["log"], source["labels"]), registry.base,
                              registry.publish, attribution_s=5)
    assert restarted.consider(now=10_000) is None and len(restarted.state.history) == 4 and restarted.state.watermark > 4_000  # no row is learned twice
    lineage = latest.manifest["lineage"]
    assert lineage["online_learning"]["base_version"] == str(int(registry.current) - 1) and lineage["eval"] == "eval.parquet"
    assert (latest.path / "statistics.json").exists() is (base.path / "statistics.json").exists()


def test_an_update_is_due_at_min_rows_or_after_every_s_with_min_new_rows(base, tmp_path):
    rng = np.random.default_rng(1)
    log, labels = _traffic(rng, 0, 60, hot=True)  # 600 rows
    cfg = OnlineLearningConfig(enabled=True, min_rows=1000, min_new_rows=500, every_s=600)
    registry = Registry(tmp_path, base)
    learner = OnlineLearner(cfg, str(tmp_path / "state.json"), lambda: (log, labels), registry.base, registry.publish,
                            attribution_s=1)
    assert learner.consider(now=-1) is None  # starts the watermark
    learner.state.last_update = 100.0
    assert learner.consider(now=200) is None  # 600 < min_rows, and every_s has not passed
    assert learner.consider(now=700) is not None  # every_s passed with >= min_new_rows
    none = OnlineLearner(cfg, str(tmp_path / "other.json"), lambda: (log, None), registry.base, registry.publish, attribution_s=1)
    assert none.consider(now=-1) is None and none.consider(now=10_000) is None  # no label has ever come in


def test_the_fast_gate():
    y = np.array([0, 0, 1, 1], dtype=float)
    good, bad = np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.9, 0.8, 0.2, 0.1])
    assert gate(y, bad, good, 0.0)[0] and not gate(y, good, bad, 0.0)[0]
    passed, a, b, why = gate(y, good, bad, 0.0)
    assert (a, b) == (1.0, 0.0) and "monitor.online.max_auc_drop" in why
    assert not gate(np.zeros(4), good, good, 0.0)[0]  # one class: nothing to compare, refused


@pytest.mark.parametrize("field, value", [("holdout", 1.0), ("min_new_rows", 0), ("max_rows", 10), ("lr", 0.0)])
def test_bad_settings_are_named(field, value):
    with pytest.raises(ConfigError, match=f"monitor.online.{field}"):
        OnlineLearningConfig(**{field: value})
