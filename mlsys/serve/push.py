"""The push (the pipeline's ``push`` step, ``mlsys model push``): only a blessed version that passed
infra validation in a sandbox app gets the serving alias; every app following the alias picks it
up by hot reload. What was decided, by whom and through what, is recorded on the version
(:mod:`mlsys.registry.pushes`) and returned as one JSON-ready dict.

>>> push_if_ready(uri, "ctr", "4", source, "champion", eval_uri, decision, estimate, cfg.evaluate, cfg.serve, "pipeline run 3f2a")["line"]  # doctest: +SKIP
'pushed: champion is version 4 (was 3); infra validated: 30 canned requests, ...'
"""

from __future__ import annotations

import time
from typing import Optional

from mlsys.evaluate.blessing import BlessingDecision
from mlsys.evaluate.config import EvaluateConfig
from mlsys.evaluate.replay import PreReleaseEstimate
from mlsys.registry import pushes
from mlsys.serve.config import ServeConfig


def _outcome(pushed: bool, line: str, **facts) -> dict:
    return {"pushed": pushed, "line": line, "at": round(time.time(), 3), **facts}


def validate_and_push(uri: str, name: str, version: str, package: str, alias: str, eval_uri: Optional[str],
                      cfg: EvaluateConfig, serve_cfg: ServeConfig, via: str, reason: str) -> dict:
    """Infra validation, then the alias move; both recorded on the version."""
    from mlsys.serve.sandbox import validate_in_sandbox

    infra = None
    if cfg.infra.enabled:
        infra = validate_in_sandbox(package, name, version, eval_uri, serve_cfg, cfg.infra)
        pushes.record(uri, name, version, {pushes.PushTag.INFRA: infra.reason})
        if not infra.passed:
            return _refused(uri, name, version, f"not pushed: {infra.reason}", infra=infra.to_dict())
    by = pushes.who()
    move = pushes.push(uri, name, version, alias, by=by, via=via, reason=reason)
    was = f" (was {move.previous})" if move.previous and move.previous != move.version else ""
    checked = infra.reason if infra else "infra validation off (evaluate.infra.enabled=false)"
    line = f"pushed: {alias} is version {version}{was}; {checked}"
    pushes.record(uri, name, version, {pushes.PushTag.PUSHED: f"pushed: {alias} is version {version}{was}"})
    return _outcome(True, line, alias=alias, previous=move.previous, by=by, via=via, infra=infra.to_dict() if infra else None)


def _refused(uri: str, name: str, version: str, line: str, **facts) -> dict:
    pushes.record(uri, name, version, {pushes.PushTag.PUSHED: line})
    return _outcome(False, line, **facts)


def push_if_ready(uri: str, name: str, version: str, package: str, alias: Optional[str], eval_uri: str,
                  decision: BlessingDecision, estimate: Optional[PreReleaseEstimate], cfg: EvaluateConfig,
                  serve_cfg: ServeConfig, via: str) -> dict:
    """The pipeline's push: blessed, no pre-release breach, infra validated -> the alias moves."""
    if not alias:
        return _refused(uri, name, version, "not pushed: registry.alias is null (registered without an alias)")
    if not cfg.push:
        return _refused(uri, name, version, f"not pushed: evaluate.push=false; push it by hand with "
                                            f"`mlsys model push {name} --version {version}`")
    if not decision.blessed:
        return _refused(uri, name, version, f"not pushed: {decision.reason}")
    if estimate is not None and estimate.breaches:
        return _refused(uri, name, version, f"not pushed: pre-release estimate: {estimate.breaches[0]}")
    from mlsys.errors import AliasMoveError

    try:
        return validate_and_push(uri, name, version, package, alias, eval_uri, cfg, serve_cfg, via, decision.reason)
    except AliasMoveError as e:  # a release in progress: the pipeline does not stomp on it
        return _refused(uri, name, version, f"not pushed: {e}")
