"""Releases of a registered model (``mlsys release``): canary and shadow, status, promote, rollback.

They change the registry only (:mod:`mlsys.registry.releases`); every app serving the model's
alias follows within ``serve.release.poll_s`` (docs/releases.md).
"""

from __future__ import annotations

import time
from typing import Optional

from mlsys.api.config import MlsysConfig


def target(cfg: MlsysConfig, model: Optional[str]) -> tuple[str, str, str]:
    """(tracking URI, model name, the alias that serves): ``--model ctr`` or serve.model's name; serve.model's alias."""
    from mlsys.errors import ConfigError
    from mlsys.registry import mlflow_store

    served = cfg.serve.model.removeprefix("models:/")
    name_of_served, _, alias = served.partition("@")
    if not alias:
        raise ConfigError(f"serve.model={cfg.serve.model} pins a version; releases move an alias: serve.model=NAME@ALIAS "
                          f"(the default is ctr@champion)")
    return mlflow_store.tracking_uri(cfg.home), model or name_of_served, alias


def start(cfg: MlsysConfig, model: Optional[str], version: str, mode: str, percent: float) -> str:
    from mlsys.registry import releases

    uri, name, alias = target(cfg, model)
    release = releases.start(uri, name, version, mode, percent, alias)
    share = f"{release.percent:g}% of users (sticky by user id)" if mode == "canary" else "a copy of every request (never answered from)"
    return (f"[release] {name} version {version}: {mode} release on {share}; {alias} is version {release.champion}. "
            f"Serving apps follow within serve.release.poll_s; `mlsys release status --model {name}` shows how it goes")


def promote(cfg: MlsysConfig, model: Optional[str]) -> str:
    from mlsys.registry import releases

    uri, name, alias = target(cfg, model)
    before = releases.read(uri, name, alias)
    after = releases.promote(uri, name, "manual: mlsys release promote", alias)
    return f"[release] {name}: version {after.champion} promoted to {alias} (was version {before.champion})"


def rollback(cfg: MlsysConfig, model: Optional[str]) -> str:
    from mlsys.registry import releases

    uri, name, alias = target(cfg, model)
    before = releases.read(uri, name, alias)
    after = releases.rollback(uri, name, "manual: mlsys release rollback", alias)
    if before.candidate is not None:
        return f"[release] {name}: the {before.mode} release of version {before.candidate} rolled back; {alias} stays version {after.champion}"
    return f"[release] {name}: {alias} rolled back from version {before.champion} to version {after.champion}"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def status(cfg: MlsysConfig, model: Optional[str]) -> str:
    """The release state as the registry has it, the controller's last window, and past outcomes."""
    from mlsys.registry import releases

    uri, name, alias = target(cfg, model)
    current = releases.read(uri, name, alias)
    lines = [f"{name}: {alias} is version {current.champion}"]
    if current.candidate is None:
        lines.append("no release in progress")
    else:
        share = f" on {current.percent:g}% of users" if current.mode == "canary" else " (mirrored, never answers)"
        lines.append(f"release: version {current.candidate}, {current.mode}{share}, since {_when(current.started_at)}")
        window = current.window
        if not window:
            lines.append("  no window judged yet (serve.release.policy.window_s after traffic starts)")
        else:
            lines.append(f"  last window ({window['window_s']:g} s, judged {_when(window['at'])}): {window['decision']}: {window['reason']}")
            lines.append(f"  {'variant':<10} {'requests':>8} {'errors':>6} {'error %':>7} {'p50 ms':>7} {'p99 ms':>7}")
            for variant in ("champion", "candidate"):
                w = window[variant]
                lines.append(f"  {variant:<10} {w['requests']:>8} {w['errors']:>6} {100 * w['error_rate']:>7.2f} {w['p50_ms']:>7g} {w['p99_ms']:>7g}")
            if window.get("score_psi") is not None:
                lines.append(f"  score PSI (candidate against champion): {window['score_psi']:.4f}")
            if window.get("shadow"):
                shadow = window["shadow"]
                lines.append(f"  shadow: {shadow['requests']} requests scored by both; top-{cfg.serve.release.shadow_top_k} "
                             f"overlap {shadow['top_k_overlap']:.3f}")
    past = releases.history(uri, name)
    if past:
        lines.append("past releases:")
        for entry in past[:5]:
            lines.append(f"  version {entry['version']}: {entry['outcome']} at {_when(entry['decided_at'])}: {entry['reason']}")
    return "\n".join(lines)
