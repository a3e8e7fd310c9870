"""Release state in the MLflow registry: the one source of truth for what serves.

A registered model ``ctr`` serves the version its alias (``champion``) points at. A release adds:

- the alias ``candidate`` on the version being released;
- registered-model tags ``mlsys.release.mode`` (canary | shadow), ``mlsys.release.percent``,
  ``mlsys.release.started_at`` (epoch s), ``mlsys.release.champion`` (the champion when it started),
  ``mlsys.release.previous`` (the champion before the last promotion: where ``rollback`` goes),
  and ``mlsys.release.window`` (the controller's last window, JSON: ``mlsys release status``);
- on the candidate's version, when it ends: ``mlsys.release.outcome`` (promoted | rolled_back),
  ``mlsys.release.reason`` and ``mlsys.release.decided_at`` (cleared when the version is released
  again), and ``mlsys.release.history`` (every ended release of it, kept).

Any MLflow client may move the alias (``set_registered_model_alias``): the app follows it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Optional

from mlsys.errors import ConfigError, ModelNotFoundError
from mlsys.registry.mlflow_store import ResolvedModel, client

CANDIDATE = "candidate"


class ReleaseTag:
    MODE = "mlsys.release.mode"
    PERCENT = "mlsys.release.percent"
    STARTED_AT = "mlsys.release.started_at"
    CHAMPION = "mlsys.release.champion"
    PREVIOUS = "mlsys.release.previous"
    WINDOW = "mlsys.release.window"
    OUTCOME = "mlsys.release.outcome"
    REASON = "mlsys.release.reason"
    DECIDED_AT = "mlsys.release.decided_at"
    HISTORY = "mlsys.release.history"  # JSON list of every release of the version that ended, oldest first


@dataclass(frozen=True)
class Release:
    """What the registry says about one model's serving: the champion, and a candidate in release or None."""

    name: str
    alias: str
    champion: str  # a version
    candidate: Optional[str] = None
    mode: Optional[str] = None  # "canary" | "shadow"
    percent: float = 0.0
    started_at: float = 0.0
    previous: Optional[str] = None
    window: Optional[dict] = None

    @property
    def salt(self) -> str:
        """What the sticky split hashes with the user id: one release, one split."""
        return f"{self.name}:{self.candidate}:{self.started_at:.0f}"

    def key(self) -> tuple:
        """What the app reloads on: the versions and the split (not the controller's window)."""
        return self.champion, self.candidate, self.mode, self.percent, self.started_at


def _source(mv) -> str:
    source = mv.source
    return source[len("file://"):] if source.startswith("file://") else source


def read(uri: str, name: str, alias: str = "champion") -> Release:
    """The model's release state (one registry call)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client(uri).get_registered_model(name)
    except MlflowException as e:
        raise ModelNotFoundError(name, f"the registry at {uri} has no such model ({e.message.splitlines()[0]})") from None
    aliases, tags = dict(model.aliases or {}), dict(model.tags or {})
    if alias not in aliases:
        raise ModelNotFoundError(f"{name}@{alias}", f"the model has no alias {alias!r} (aliases: {sorted(aliases) or 'none'})")
    candidate = aliases.get(CANDIDATE)
    if candidate == aliases[alias]:
        candidate = None  # promoted by another client moving the champion alias: nothing left in release
    window = tags.get(ReleaseTag.WINDOW)
    return Release(
        name=name, alias=alias, champion=str(aliases[alias]), candidate=str(candidate) if candidate else None,
        mode=tags.get(ReleaseTag.MODE) if candidate else None,
        percent=float(tags.get(ReleaseTag.PERCENT, 0) or 0) if candidate else 0.0,
        started_at=float(tags.get(ReleaseTag.STARTED_AT, 0) or 0) if candidate else 0.0,
        previous=tags.get(ReleaseTag.PREVIOUS), window=json.loads(window) if window and candidate else None,
    )


def version(uri: str, name: str, number: str) -> ResolvedModel:
    """One version's package source."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client(uri).get_model_version(name, str(number))
    except MlflowException as e:
        raise ModelNotFoundError(f"{name}/{number}", f"the registry at {uri} has no such version ({e.message.splitlines()[0]})") from None
    return ResolvedModel(name, str(mv.version), _source(mv), mv.run_id)


def start(uri: str, name: str, number: str, mode: str, percent: float, alias: str = "champion") -> Release:
    """Put version ``number`` in release: ``mlsys release canary|shadow``."""
    current = read(uri, name, alias)
    version(uri, name, number)  # it exists
    if str(number) == current.champion:
        raise ConfigError(f"--version {number}: version {number} of {name!r} already serves as {alias!r}; release another version")
    if current.candidate is not None and current.candidate != str(number):
        raise ConfigError(f"version {current.candidate} of {name!r} is in {current.mode} release; "
                          f"`mlsys release promote` or `mlsys release rollback` it first")
    if mode not in ("canary", "shadow"):
        raise ConfigError(f"release mode {mode!r}: expected canary or shadow")
    if not 0 < percent <= 100 and mode == "canary":
        raise ConfigError(f"--percent {percent:g}: a canary takes a share of users in (0, 100]")
    c = client(uri)
    for key, value in ((ReleaseTag.MODE, mode), (ReleaseTag.PERCENT, f"{percent:g}" if mode == "canary" else "0"),
                       (ReleaseTag.STARTED_AT, f"{time.time():.3f}"), (ReleaseTag.CHAMPION, current.champion)):
        c.set_registered_model_tag(name, key, value)
    if ReleaseTag.WINDOW in (c.get_registered_model(name).tags or {}):  # the last release's
        c.delete_registered_model_tag(name, ReleaseTag.WINDOW)
    for key in (ReleaseTag.OUTCOME, ReleaseTag.REASON, ReleaseTag.DECIDED_AT):  # a new release of it: no old outcome
        if key in (c.get_model_version(name, str(number)).tags or {}):
            c.delete_model_version_tag(name, str(number), key)
    c.set_registered_model_alias(name, CANDIDATE, str(number))  # last: the app sees a complete release
    return read(uri, name, alias)


def _decided(c, name: str, number: str, outcome: str, reason: str) -> None:
    at = time.time()
    c.set_model_version_tag(name, number, ReleaseTag.OUTCOME, outcome)
    c.set_model_version_tag(name, number, ReleaseTag.REASON, reason[:4000])
    c.set_model_version_tag(name, number, ReleaseTag.DECIDED_AT, f"{at:.3f}")
    past = json.loads((c.get_model_version(name, number).tags or {}).get(ReleaseTag.HISTORY, "[]"))
    past.append({"outcome": outcome, "reason": reason[:300], "decided_at": round(at, 3)})
    while len(json.dumps(past)) > 4800:  # a tag's value is bounded: the oldest go first
        past.pop(0)
    c.set_model_version_tag(name, number, ReleaseTag.HISTORY, json.dumps(past))


def _end(c, name: str) -> None:
    c.delete_registered_model_alias(name, CANDIDATE)
    tags = c.get_registered_model(name).tags or {}
    for key in (ReleaseTag.MODE, ReleaseTag.PERCENT, ReleaseTag.STARTED_AT, ReleaseTag.CHAMPION, ReleaseTag.WINDOW):
        if key in tags:
            c.delete_registered_model_tag(name, key)


def promote(uri: str, name: str, reason: str, alias: str = "champion", expected: Optional[str] = None) -> Release:
    """The candidate becomes the champion (the old champion is kept as ``previous``).
    ``expected``: promote only if that version is still the candidate (a controller's decision)."""
    current = read(uri, name, alias)
    if current.candidate is None or (expected is not None and current.candidate != expected):
        raise ConfigError(f"{name!r} has no version in release" + (f" (expected version {expected})" if expected else "")
                          + f"; {alias!r} is version {current.champion}")
    c = client(uri)
    c.set_registered_model_tag(name, ReleaseTag.PREVIOUS, current.champion)
    c.set_registered_model_alias(name, alias, current.candidate)
    _decided(c, name, current.candidate, "promoted", reason)
    _end(c, name)
    return read(uri, name, alias)


def rollback(uri: str, name: str, reason: str, alias: str = "champion", expected: Optional[str] = None) -> Release:
    """End a release without promoting it; with none in release, move the alias back to ``previous``."""
    current = read(uri, name, alias)
    c = client(uri)
    if current.candidate is not None:
        if expected is not None and current.candidate != expected:
            return current  # another decision ended that release already
        _decided(c, name, current.candidate, "rolled_back", reason)
        _end(c, name)
        return read(uri, name, alias)
    if expected is not None:
        return current
    if not current.previous or current.previous == current.champion:
        raise ConfigError(f"{name!r} has no version in release and no previous champion to roll back to; "
                          f"{alias!r} is version {current.champion}")
    _decided(c, name, current.champion, "rolled_back", reason)
    c.set_registered_model_alias(name, alias, current.previous)
    c.delete_registered_model_tag(name, ReleaseTag.PREVIOUS)
    return read(uri, name, alias)


def record_window(uri: str, name: str, candidate: str, window: dict) -> None:
    """The controller's latest window (per-variant summaries, the decision) for ``mlsys release status``."""
    current = read(uri, name)
    if current.candidate == candidate:
        client(uri).set_registered_model_tag(name, ReleaseTag.WINDOW, json.dumps(window, separators=(",", ":"))[:4900])


def history(uri: str, name: str) -> list[dict]:
    """Every ended release of every version of ``name``, newest first (``version`` added to each)."""
    out = []
    for mv in client(uri).search_model_versions(f"name='{name}'"):
        for entry in json.loads((mv.tags or {}).get(ReleaseTag.HISTORY, "[]")):
            out.append({"version": str(mv.version), **entry})
    return sorted(out, key=lambda e: e["decided_at"], reverse=True)


def outcome(uri: str, name: str, number: str) -> dict:
    """A version's release outcome tags (empty if it never ended a release)."""
    tags = client(uri).get_model_version(name, str(number)).tags or {}
    return {k.rsplit(".", 1)[1]: v for k, v in tags.items() if k in (ReleaseTag.OUTCOME, ReleaseTag.REASON, ReleaseTag.DECIDED_AT)}
