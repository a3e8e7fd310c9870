"""Releases without a cluster: the sticky split, the windows, the policy's decisions, and the
release state kept in a real MLflow registry (SQLite)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlsys.errors import ConfigError
from mlsys.serve.release import (
    Action, Mode, ReleasePolicy, Routing, ShadowWindow, VariantWindow, in_candidate, score_psi, top_k_overlap,
)


def test_the_split_is_sticky_and_near_its_share():
    users = range(20_000)
    first = [in_candidate(u, 30, "ctr:2:1") for u in users]
    assert first == [in_candidate(u, 30, "ctr:2:1") for u in users]  # one user, one variant, every time
    assert abs(np.mean(first) - 0.30) < 0.015
    other = [in_candidate(u, 30, "ctr:3:2") for u in users]  # another release draws other users
    assert 0.15 < np.mean(np.array(first) & np.array(other)) / 0.30 < 0.45
    assert not any(in_candidate(u, 0, "s") for u in range(100)) and all(in_candidate(u, 100, "s") for u in range(100))


def test_routing_answers_from_one_variant_and_shadows_without_answering():
    champion, candidate = object(), object()
    assert Routing(champion).route(7) == (champion, None, "champion")
    shadow = Routing(champion, candidate, Mode.shadow, 0, "s")
    assert all(shadow.route(u) == (champion, candidate, "champion") for u in range(50))
    canary = Routing(champion, candidate, Mode.canary, 50, "s")
    routes = [canary.route(u) for u in range(2000)]
    assert {r[1] for r in routes} == {None}
    assert 0.45 < sum(r[0] is candidate for r in routes) / 2000 < 0.55
    assert all((r[0] is candidate) == (r[2] == "candidate") for r in routes)


def _window(requests: int, errors: int = 0, latency_ms: float = 5.0, scores=None) -> VariantWindow:
    w = VariantWindow()
    rng = np.random.default_rng(0)
    for i in range(requests):
        s = rng.uniform(0.2, 0.8, 10) if scores is None else np.full(10, scores)
        w.observe(latency_ms, s, error=i < errors)
    return w


def test_windows_merge_exactly_and_round_trip():
    a, b = _window(30, 3, 4.0), _window(70, 1, 40.0)
    merged = a.merge(b)
    assert (merged.requests, merged.errors) == (100, 4)
    assert sum(merged.latency) == 100 and sum(merged.scores) == 1000
    assert merged.quantile_ms(0.2) == 5 and merged.quantile_ms(0.99) == 50
    assert VariantWindow.from_dict(merged.to_dict()) == merged
    assert VariantWindow().quantile_ms(0.99) == 0.0


def test_the_policy_rolls_back_on_errors_latency_or_a_score_shift_and_promotes_after_healthy_windows():
    policy = ReleasePolicy(min_requests=50, min_requests_rollback=20, promote_after_windows=2)
    champion = _window(200)
    decision, healthy = policy.decide(champion, _window(60, errors=6), 0)
    assert decision.action is Action.rollback and "error rate 10.0%" in decision.reason and healthy == 0
    decision, _ = policy.decide(champion, _window(60, latency_ms=60.0), 1)
    assert decision.action is Action.rollback and "p99 latency" in decision.reason
    decision, _ = policy.decide(champion, _window(60, scores=0.5), 1)  # a constant model
    assert decision.action is Action.rollback and "score PSI" in decision.reason
    decision, healthy = policy.decide(champion, _window(10, errors=10), 0)  # too few to judge
    assert decision.action is Action.hold and healthy == 0
    decision, healthy = policy.decide(champion, _window(60), 0)
    assert decision.action is Action.hold and healthy == 1
    decision, healthy = policy.decide(champion, _window(60), healthy)
    assert decision.action is Action.promote and healthy == 2
    never = ReleasePolicy(min_requests=50, promote_after_windows=0)
    assert never.decide(champion, _window(60), 10)[0].action is Action.hold


def test_one_slow_request_is_not_a_slower_model():
    """Over 30 requests a window's p99 is its slowest request: one 200 ms stall against the champion's 3 ms
    rolled a healthy canary back on a loaded CI machine. The p99 criterion needs min_slow_requests above its bound."""
    policy = ReleasePolicy(min_requests_rollback=20)
    champion = _window(200, latency_ms=3.0)
    stalled = _window(29, latency_ms=3.0).merge(_window(1, latency_ms=200.0))
    assert stalled.quantile_ms(0.99) == 200 and policy.breach(champion, stalled) is None
    slower = _window(25, latency_ms=3.0).merge(_window(5, latency_ms=200.0))
    reason = policy.breach(champion, slower)
    assert reason and "5 of 30 requests above 6 ms" in reason
    assert ReleasePolicy(min_requests_rollback=20, min_slow_requests=1).breach(champion, stalled)


def test_policy_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match="serve.release.policy.max_p99_ratio"):
        ReleasePolicy(max_p99_ratio=0.5)
    with pytest.raises(ConfigError, match="serve.release.policy.min_slow_requests"):
        ReleasePolicy(min_slow_requests=0)


def test_shadow_measures_overlap_and_shift():
    a = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    assert top_k_overlap(a, a, 3) == 1.0
    assert top_k_overlap(a, -a, 2) == 0.0
    w = ShadowWindow()
    w.observe(a, a[::-1], 2, 3.0, 4.0)
    assert w.requests == 1 and w.overlap == 0.0 and w.candidate.requests == 1
    assert score_psi(_window(50).scores, _window(50).scores) < 1e-6
    assert score_psi(_window(50).scores, _window(50, scores=0.95).scores) > 1


# -- the registry ------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    """A real MLflow registry (SQLite) with model ``ctr`` versions 1-3, ``champion`` on 1."""
    from mlsys.registry.mlflow_store import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = client(uri)
    c.create_registered_model("ctr")
    for _ in range(3):
        c.create_model_version("ctr", source=str(tmp_path / "package"))
    c.set_registered_model_alias("ctr", "champion", "1")
    return uri


def test_a_canary_is_started_promoted_and_rolled_back_in_the_registry(registry):
    from mlsys.registry import releases
    from mlsys.registry.mlflow_store import client

    assert releases.read(registry, "ctr") == releases.Release("ctr", "champion", "1")
    started = releases.start(registry, "ctr", "2", "canary", 25)
    assert (started.candidate, started.mode, started.percent, started.champion) == ("2", "canary", 25.0, "1")
    assert started.salt.startswith("ctr:2:")
    with pytest.raises(ConfigError, match="version 2 of 'ctr' is in canary release"):
        releases.start(registry, "ctr", "3", "canary", 10)
    releases.record_window(registry, "ctr", "2", {"healthy": 1, "decision": "hold"})
    assert releases.read(registry, "ctr").window == {"healthy": 1, "decision": "hold"}
    assert releases.rollback(registry, "ctr", "automatic: x", expected="3").candidate == "2"  # not that release: untouched
    promoted = releases.promote(registry, "ctr", "manual")
    assert (promoted.champion, promoted.candidate, promoted.previous, promoted.window) == ("2", None, "1", None)
    assert releases.outcome(registry, "ctr", "2")["outcome"] == "promoted"
    # A shadow release of 3, rolled back: champion stays 2.
    releases.start(registry, "ctr", "3", "shadow", 0)
    ended = releases.rollback(registry, "ctr", "automatic: score PSI 4.1", expected="3")
    assert (ended.champion, ended.candidate) == ("2", None)
    assert releases.outcome(registry, "ctr", "3") == {"outcome": "rolled_back", "reason": "automatic: score PSI 4.1",
                                                      "decided_at": releases.outcome(registry, "ctr", "3")["decided_at"]}
    releases.start(registry, "ctr", "3", "canary", 5)  # released again: its last outcome cleared, its history kept
    assert releases.outcome(registry, "ctr", "3") == {}
    releases.rollback(registry, "ctr", "manual: again")
    assert [(e["version"], e["outcome"], e["reason"]) for e in releases.history(registry, "ctr")] == [
        ("3", "rolled_back", "manual: again"), ("3", "rolled_back", "automatic: score PSI 4.1"), ("2", "promoted", "manual")]
    # With nothing in release, a rollback moves the alias back to the previous champion.
    assert releases.rollback(registry, "ctr", "manual").champion == "1"
    with pytest.raises(ConfigError, match="no previous champion"):
        releases.rollback(registry, "ctr", "manual")
    # Another MLflow client moving the alias onto the candidate ends the release.
    releases.start(registry, "ctr", "3", "canary", 50)
    client(registry).set_registered_model_alias("ctr", "champion", "3")
    assert releases.read(registry, "ctr").candidate is None


def test_release_mistakes_are_one_clear_line(registry):
    from mlsys.errors import ModelNotFoundError
    from mlsys.registry import releases

    with pytest.raises(ConfigError, match="already serves as 'champion'"):
        releases.start(registry, "ctr", "1", "canary", 10)
    with pytest.raises(ConfigError, match=r"--percent 0: a canary takes a share of users in \(0, 100\]"):
        releases.start(registry, "ctr", "2", "canary", 0)
    with pytest.raises(ModelNotFoundError, match="ctr/9"):
        releases.start(registry, "ctr", "9", "canary", 10)
    with pytest.raises(ModelNotFoundError, match="no alias 'prod'"):
        releases.read(registry, "ctr", "prod")
    with pytest.raises(ConfigError, match="has no version in release"):
        releases.promote(registry, "ctr", "manual")


def _report(champion: VariantWindow, candidate: VariantWindow) -> dict:
    return {"champion": champion.to_dict(), "candidate": candidate.to_dict(), "shadow": ShadowWindow().to_dict()}


def test_the_controller_merges_replicas_windows_and_writes_its_decisions_to_the_registry(registry):
    """The release controller's class as Serve runs it (no cluster): two replicas' reports make a
    window; healthy windows promote, a breach rolls back, and a restarted controller counts on."""
    from mlsys.registry import releases
    from mlsys.serve.app import Follow, ReleaseController
    from mlsys.serve.config import ReleaseConfig, ServeConfig

    cfg = ServeConfig(release=ReleaseConfig(policy=ReleasePolicy(window_s=0.05, min_requests=50, promote_after_windows=2)))
    follow = Follow(registry, "ctr", "champion")
    controller = ReleaseController.func_or_class(follow, cfg)
    started = releases.start(registry, "ctr", "2", "canary", 50)
    args = ("2", started.started_at, "canary")
    assert controller.observe(*args, _report(_window(30), _window(30))) is None  # the window is still open
    time.sleep(0.06)
    window = controller.observe(*args, _report(_window(30), _window(30)))  # the second replica's report closes it
    assert window["champion"]["requests"] == 60 and window["candidate"]["requests"] == 60
    assert window["decision"] == "hold" and window["healthy"] == 1
    assert releases.read(registry, "ctr").window["healthy"] == 1
    restarted = ReleaseController.func_or_class(follow, cfg)  # the count of healthy windows is the registry's
    assert restarted.observe(*args, _report(_window(30), _window(30))) is None  # its first report opens a window
    time.sleep(0.06)
    window = restarted.observe(*args, _report(_window(30), _window(30)))
    assert window["decision"] == "promote"
    after = releases.read(registry, "ctr")
    assert (after.champion, after.candidate) == ("2", None)
    assert releases.outcome(registry, "ctr", "2")["reason"].startswith("automatic: 2 healthy windows")
    # A canary answering errors is rolled back at the first window that has enough of its requests.
    started = releases.start(registry, "ctr", "3", "canary", 10)
    restarted.observe("3", started.started_at, "canary", _report(_window(50), _window(12, errors=3)))
    time.sleep(0.06)
    window = restarted.observe("3", started.started_at, "canary", _report(_window(50), _window(13, errors=2)))
    assert window["decision"] == "rollback" and "error rate 20.0%" in window["reason"]
    assert releases.read(registry, "ctr").candidate is None
    assert releases.outcome(registry, "ctr", "3")["outcome"] == "rolled_back"


def test_a_failing_version_fails_only_its_own_requests_of_a_shared_batch():
    """While a canary serves, one batched scoring call (@serve.batch, or a turn's coalesced requests) holds both versions' requests."""
    from mlsys.serve.app import _per_version, _raised

    def score(first, items):
        if keys[first] == "bad":
            raise RuntimeError("the candidate's model raised")
        return [x * 10 for x in items]

    keys = ["good", "bad", "good", "bad"]
    out = _per_version(keys, [1, 2, 3, 4], score)
    assert out[0] == 10 and out[2] == 30 and all(isinstance(out[i], RuntimeError) for i in (1, 3))
    assert _raised([out[0], out[2]]) == [10, 30]
    with pytest.raises(RuntimeError, match="candidate's model"):
        _raised(out)


def test_shadow_windows_merge_exactly_and_round_trip():
    a, b = ShadowWindow(), ShadowWindow()
    x = np.array([0.9, 0.1, 0.5])
    a.observe(x, x, 2, 3.0, 4.0)
    b.observe(x, -x, 2, 3.0, 40.0)
    merged = a.merge(b)
    assert merged.requests == 2 and merged.overlap == 0.75 and merged.candidate.requests == 2
    assert ShadowWindow.from_dict(merged.to_dict()) == merged
