"""Sweeps as Hydra users expect them: ``mlsys run -m model=lr,deepfm,din train.learning_rate=0.001,0.01``.

Hydra's own override grammar expands the sweep (choices ``a,b`` and ``range(...)``, as its
``BasicSweeper``: every combination); each combination is one pipeline run, in order, so steps
they share are computed once and reused from the cache. The runs are grouped in MLflow by the
tag ``mlsys.sweep`` (filter ``tags."mlsys.sweep" = '<id>'``). A failed combination is reported
in the table and the others still run; the sweep fails at the end if any did.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from mlsys.errors import ConfigError, MlsysError
from mlsys.pipeline.runner import PipelineResult


def expand(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every combination of the sweep's overrides, and the keys that vary.

    >>> expand(["model=lr,din", "train.max_epochs=1"])[0]
    [['model=lr', 'train.max_epochs=1'], ['model=din', 'train.max_epochs=1']]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # Hydra's grammar errors name the override
        raise ConfigError(f"cannot parse the sweep: {str(e).splitlines()[0]}") from None
    axes, swept = [], []
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes.append([f"{key}={o.get_value_element_as_str()}"])
        elif o.is_discrete_sweep():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            swept.append(key)
        else:
            raise ConfigError(f"{o.input_line}: only lists (a,b,c) and range(...) sweep with -m; interval() needs a tuner (tune=optuna_asha)")
    return [list(c) for c in itertools.product(*axes)], swept


@dataclass(frozen=True)
class SweepRun:
    overrides: list[str]
    result: Optional[PipelineResult]
    error: str = ""


def sweep(overrides: list[str], run: Callable[[list[str], dict], PipelineResult], echo: Callable[[str], None] = print) -> list[SweepRun]:
    """Run every combination with ``run(overrides, tags)``; print the comparison table."""
    combos, swept = expand(overrides)
    if not swept:
        raise ConfigError(f"-m with no sweep in {overrides}: give a key several values, e.g. model=lr,deepfm")
    sweep_id = uuid.uuid4().hex[:12]
    from mlsys.registry.mlflow_store import Tag

    echo(f"[sweep] {sweep_id}: {len(combos)} pipeline runs over {', '.join(swept)}")
    runs = []
    for i, combo in enumerate(combos, 1):
        echo(f"[sweep] run {i}/{len(combos)}: {' '.join(combo)}")
        try:
            runs.append(SweepRun(combo, run(combo, {Tag.SWEEP: sweep_id, f"{Tag.SWEEP}.index": str(i)})))
        except MlsysError as e:
            echo(f"[sweep] run {i} failed: {e}")
            runs.append(SweepRun(combo, None, str(e).splitlines()[0]))
    echo(table(runs, swept, sweep_id))
    failed = [r for r in runs if r.result is None]
    if failed:
        raise MlsysError(f"{len(failed)} of {len(runs)} sweep runs failed: {'; '.join(' '.join(r.overrides) for r in failed)}")
    return runs


def _step_metric(result: PipelineResult, step: str, name: str) -> Optional[float]:
    report = next((s for s in result.steps if s.name == step), None)
    return next((v for n, v, _ in (report.metrics if report else []) if n == name), None)


def _push_line(result: PipelineResult) -> str:
    from mlsys import storage

    try:
        return storage.read_json(result.output("push").decision)["line"].split(";")[0]
    except Exception:  # a pipeline cut short with pipeline.until
        return "-"


def table(runs: list[SweepRun], swept: list[str], sweep_id: str) -> str:
    """The sweep's runs side by side: the swept values, eval metrics, the version and what the gate did."""
    head = [*swept, "auc", "logloss", "version", "outcome"]
    rows = []
    for r in runs:
        values = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in r.overrides}
        cells = [values.get(k, "") for k in swept]
        if r.result is None:
            rows.append([*cells, "-", "-", "-", f"failed: {r.error[:80]}"])
            continue
        auc, logloss = (_step_metric(r.result, "evaluate", f"eval_{m}") for m in ("auc", "logloss"))
        register = next((s for s in r.result.steps if s.name == "register"), None)
        rows.append([*cells, f"{auc:.4f}" if auc is not None else "-", f"{logloss:.4f}" if logloss is not None else "-",
                     register.outputs.version if register else "-", _push_line(r.result)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = [f"\nsweep {sweep_id} (MLflow: tags.\"mlsys.sweep\" = '{sweep_id}')",
             "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)

