"""A registered model's versions and its serving alias (``mlsys model history|push|rollback``).

``push`` and ``rollback`` move ``registry.alias`` (``champion``); every app following it hot
reloads within ``serve.release.poll_s`` (docs/release.md).
"""

from __future__ import annotations

import time
from typing import Optional

from mlsys.api.config import MlsysConfig


def _target(cfg: MlsysConfig, model: Optional[str]) -> tuple[str, str, str]:
    from mlsys.errors import ConfigError
    from mlsys.registry import mlflow_store

    if not cfg.registry.alias:
        raise ConfigError("registry.alias is null: name the serving alias to move, e.g. registry.alias=champion")
    return mlflow_store.tracking_uri(cfg.home), model or cfg.registry.model_name, cfg.registry.alias


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def history(cfg: MlsysConfig, model: Optional[str]) -> str:
    """Versions newest first: aliases, eval AUC, blessed or not (and why), infra validation, alias moves."""
    from mlsys.registry import pushes

    uri, name, _ = _target(cfg, model)
    rows = pushes.history(uri, name)
    lines = [f"{name}: {len(rows)} version(s), newest first (times UTC)",
             f"{'version':>7}  {'created':<19}  {'aliases':<18} {'auc':>7} {'logloss':>7}  blessed"]
    for r in rows:
        m = r["metrics"]
        blessed = {True: "yes", False: "no", None: "-"}[r["blessed"]]
        lines.append(f"{r['version']:>7}  {_when(r['created']):<19}  {','.join(r['aliases']) or '-':<18} "
                     f"{m.get('auc', float('nan')):>7.4f} {m.get('logloss', float('nan')):>7.4f}  {blessed}")
        for label, text in (("gate", r["blessing"]), ("infra", r["infra"]), ("push", r["pushed"])):
            if text:
                lines.append(f"{'':>9}{label}: {text}")
        for move in r["moves"]:
            lines.append(f"{'':>9}{move['action']} at {_when(move['at'])} by {move['by']} via {move['via']} "
                         f"(from version {move.get('from') or '-'})")
        for ended in r["releases"]:
            lines.append(f"{'':>9}release {ended['outcome']} at {_when(ended['decided_at'])}: {ended['reason']}")
    return "\n".join(lines)


def push(cfg: MlsysConfig, model: Optional[str], version: str) -> str:
    """Push ``version`` by hand: through infra validation (not the blessing: a person decided); the line says
    whether the gate had blessed it."""
    from mlsys.errors import AliasMoveError
    from mlsys.registry import pushes, releases
    from mlsys.registry.package import read_package
    from mlsys.serve.push import validate_and_push

    uri, name, alias = _target(cfg, model)
    source = releases.version(uri, name, version).source
    tags = next(r for r in pushes.history(uri, name) if r["version"] == str(version))
    try:
        eval_uri = read_package(source).manifest.get("lineage", {}).get("eval")
    except Exception:  # infra validation says why it does not load
        eval_uri = None
    from mlsys.cluster import connect

    connect(cfg.cluster)  # the sandbox app runs on this Ray (cluster.address; the embedded one by default)
    gate = {True: "blessed", False: f"NOT blessed ({tags['blessing']})", None: "never gated"}[tags["blessed"]]
    outcome = validate_and_push(uri, name, str(version), source, alias, eval_uri, cfg.evaluate, cfg.serve,
                                via="mlsys model push", reason=f"manual push; the gate: {gate}")
    if not outcome["pushed"]:
        raise AliasMoveError(name, alias, outcome["line"])
    return f"[model] {name} version {version} {outcome['line']}; the gate: {gate}"


def rollback(cfg: MlsysConfig, model: Optional[str], to: Optional[str]) -> str:
    from mlsys.registry import pushes

    uri, name, alias = _target(cfg, model)
    move = pushes.rollback(uri, name, alias, by=pushes.who(), via="mlsys model rollback", to=to)
    return (f"[model] {name}: {alias} rolled back from version {move.previous} to version {move.version}; "
            f"apps following {name}@{alias} switch within serve.release.poll_s")
