"""Pushes and rollbacks of a registered model's serving alias, and what decided them, in the MLflow registry.

The pipeline's ``push`` step, ``mlsys model push`` and ``mlsys model rollback`` move the alias
(``champion``) here; every app following the alias picks the move up by hot reload. Each move is
recorded on the version it lands on (``mlsys.push.history``: who, through what, when, from which
version, why), and the old champion is kept as the model's ``mlsys.release.previous`` (where a
rollback goes, as for ``mlsys release rollback``). The gate's findings are version tags too:
``mlsys.blessed`` (true | false), ``mlsys.blessing`` (the one-line reason), ``mlsys.infra`` (the
infra validation's line) and ``mlsys.pushed`` (the push step's outcome line).

>>> push(uri, "ctr", "4", "champion", by="ana@host", via="pipeline run 3f2a", reason="blessed: auc 0.79 ...")  # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass
from typing import Optional

from mlsys.errors import AliasMoveError
from mlsys.registry import releases
from mlsys.registry.mlflow_store import client
from mlsys.registry.releases import ReleaseTag


class PushTag:
    BLESSED = "mlsys.blessed"
    BLESSING = "mlsys.blessing"
    INFRA = "mlsys.infra"
    PUSHED = "mlsys.pushed"  # the push step's outcome: "pushed ..." or "not pushed: ..."
    HISTORY = "mlsys.push.history"  # JSON list of alias moves onto this version, oldest first


def who() -> str:
    """``user@host``: recorded with every alias move."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record(uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Set the gate's tags on a version (values cut to MLflow's tag length)."""
    c = client(uri)
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, str(value)[:4900])


def _append(c, name: str, version: str, entry: dict) -> None:
    past = json.loads((c.get_model_version(name, version).tags or {}).get(PushTag.HISTORY, "[]"))
    past.append(entry)
    while len(json.dumps(past)) > 4800:  # a tag's value is bounded: the oldest go first
        past.pop(0)
    c.set_model_version_tag(name, version, PushTag.HISTORY, json.dumps(past))


def _champion(uri: str, name: str, alias: str) -> Optional[str]:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _no_release(uri: str, name: str, alias: str, what: str) -> None:
    try:
        current = releases.read(uri, name, alias)
    except Exception:  # no model or no alias yet: nothing in release
        return
    if current.candidate is not None:
        raise AliasMoveError(name, alias, f"cannot {what}: version {current.candidate} is in {current.mode} release; "
                                          f"`mlsys release promote` or `mlsys release rollback` it first")


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: str
    previous: Optional[str]


def push(uri: str, name: str, version: str, alias: str, by: str, via: str, reason: str) -> AliasMove:
    """Point ``alias`` at ``version``; the old champion becomes the model's previous (where rollback goes)."""
    version = str(version)
    releases.version(uri, name, version)  # it exists
    _no_release(uri, name, alias, f"push version {version}")
    previous = _champion(uri, name, alias)
    c = client(uri)
    if previous and previous != version:
        c.set_registered_model_tag(name, ReleaseTag.PREVIOUS, previous)
    c.set_registered_model_alias(name, alias, version)
    _append(c, name, version, {"action": "push", "at": round(time.time(), 3), "by": by, "via": via,
                                "from": previous, "reason": reason[:300]})
    return AliasMove(name, alias, version, previous)


def rollback(uri: str, name: str, alias: str, by: str, via: str, to: Optional[str] = None) -> AliasMove:
    """Move ``alias`` back to the previous champion, or to version ``to``."""
    current = _champion(uri, name, alias)
    if current is None:
        raise AliasMoveError(name, alias, f"the alias is not set, nothing to roll back (`mlsys model history {name}` lists the versions)")
    _no_release(uri, name, alias, "roll back")
    c = client(uri)
    target = str(to) if to is not None else (c.get_registered_model(name).tags or {}).get(ReleaseTag.PREVIOUS)
    if not target or target == current:
        raise AliasMoveError(name, alias, f"it is version {current} and no earlier champion is recorded; "
                                          f"name one with --to N (`mlsys model history {name}` lists the versions)")
    releases.version(uri, name, target)  # it exists
    c.set_registered_model_alias(name, alias, target)
    if ReleaseTag.PREVIOUS in (c.get_registered_model(name).tags or {}):
        c.delete_registered_model_tag(name, ReleaseTag.PREVIOUS)  # a second rollback names its target
    _append(c, name, target, {"action": "rollback", "at": round(time.time(), 3), "by": by, "via": via,
                               "from": current, "reason": f"rolled back from version {current}"})
    return AliasMove(name, alias, target, current)


def history(uri: str, name: str) -> list[dict]:
    """Every version of ``name``, newest first: aliases, eval metrics, the gate's findings, its alias moves."""
    from mlflow.exceptions import MlflowException

    c = client(uri)
    try:
        model = c.get_registered_model(name)
    except MlflowException as e:
        from mlsys.errors import ModelNotFoundError

        raise ModelNotFoundError(name, f"the registry at {uri} has no such model ({e.message.splitlines()[0]})") from None
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for mv in c.search_model_versions(f"name='{name}'"):
        tags = dict(mv.tags or {})
        rows.append({
            "version": str(mv.version),
            "created": mv.creation_timestamp / 1000.0,
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "metrics": {k.removeprefix("eval_"): float(v) for k, v in tags.items() if k.startswith("eval_")},
            "blessed": {"true": True, "false": False}.get(tags.get(PushTag.BLESSED, "")),
            "blessing": tags.get(PushTag.BLESSING, ""),
            "infra": tags.get(PushTag.INFRA, ""),
            "pushed": tags.get(PushTag.PUSHED, ""),
            "moves": json.loads(tags.get(PushTag.HISTORY, "[]")),
            "releases": json.loads(tags.get(ReleaseTag.HISTORY, "[]")),
        })
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)
