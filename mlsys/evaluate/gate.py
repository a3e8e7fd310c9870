"""The evaluation gate of a registered version (the pipeline's ``bless`` step): the candidate
against the champion its registry alias names, on the same eval data, overall and per slice;
the blessing; the pre-release replay of the most recent logged requests; the HTML report; and
the version's tags (``mlsys.blessed``, ``mlsys.blessing``) that the push and ``mlsys model
history`` read.

>>> gate = run_gate(uri, "ctr", "4", package, "champion", train, eval, cfg.evaluate, log_dir, uris, "Evaluation")  # doctest: +SKIP
>>> gate.decision.reason                                                                                  # doctest: +SKIP
'not blessed: auc on user_activity=1-23 (812 examples): 0.701 < champion 0.733 - 0.02'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mlsys import storage
from mlsys.evaluate.blessing import BlessingDecision, bless
from mlsys.evaluate.config import EvaluateConfig
from mlsys.evaluate.evaluation import evaluate_candidate
from mlsys.evaluate.replay import PreReleaseEstimate, estimate
from mlsys.evaluate.report import write_evaluation_report
from mlsys.evaluate.slices import Evaluation
from mlsys.registry import pushes
from mlsys.registry.mlflow_store import ResolvedModel, resolve


@dataclass(frozen=True)
class GateResult:
    evaluation: Evaluation
    decision: BlessingDecision
    estimate: Optional[PreReleaseEstimate]
    champion: Optional[str]  # the version compared against, or None (a first model, or none loadable)
    notes: tuple[str, ...]  # what the gate could not do, one line each (e.g. an unloadable champion)

    @property
    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the step: the candidate's and the champion's, overall and per slice."""
        out = {f"candidate.{k}": v for k, v in self.evaluation.flat_metrics("candidate").items()}
        if self.champion is not None:
            out.update({f"champion.{k}": v for k, v in self.evaluation.flat_metrics("champion").items()})
        return out


def champion_of(uri: str, name: str, alias: Optional[str]) -> Optional[ResolvedModel]:
    """The version ``name@alias`` serves now, or None (no alias given, or none set yet)."""
    from mlsys.errors import ModelNotFoundError

    if not alias:
        return None
    try:
        return resolve(uri, f"{name}@{alias}")
    except ModelNotFoundError:
        return None


def _loadable(champion: Optional[ResolvedModel], version: str) -> tuple[Optional[ResolvedModel], list[str]]:
    from mlsys.registry.package import read_package

    if champion is None or champion.version == str(version):
        return None, []
    try:
        read_package(champion.source)
    except Exception as e:  # an old package format, a lost artifact: judge by the value thresholds, and say so
        return None, [f"champion version {champion.version} could not be loaded ({str(e).splitlines()[0][:200]}): "
                      f"judged by the value thresholds alone"]
    return champion, []


def replay_logged(log, name: str, package: str, cfg: EvaluateConfig) -> Optional[PreReleaseEstimate]:
    """The pre-release estimate over ``name``'s rows of ``log`` (the feature log as a frame; None without any)."""
    from mlsys.registry.package import read_package
    from mlsys.registry.scoring import PackageScorer

    if not cfg.replay.enabled or log is None or not len(log):
        return None
    log = log[log["model"] == name]
    if not len(log):
        return None
    scorer = PackageScorer(read_package(package), threads=2)
    return estimate(log, scorer.score, cfg.replay)


def run_gate(uri: str, name: str, version: str, package: str, alias: Optional[str], train_uri: str, eval_uri: str,
             cfg: EvaluateConfig, replay_log, uris, title: str) -> GateResult:
    """Evaluate, bless, replay ``replay_log`` (the feature log's rows, or None); write
    ``uris.evaluation|blessing|estimate|report``; tag the version."""
    champion, notes = _loadable(champion_of(uri, name, alias), version)
    evaluation = evaluate_candidate(package, champion.source if champion else None, train_uri, eval_uri, cfg)
    decision = bless(evaluation, cfg.blessing, champion.version if champion else None)
    replayed = replay_logged(replay_log, name, package, cfg)
    storage.write_json(uris.evaluation, evaluation.to_dict())
    storage.write_json(uris.blessing, {**decision.to_dict(), "notes": notes})
    storage.write_json(uris.estimate, replayed.to_dict() if replayed else None)
    write_evaluation_report(evaluation, decision, replayed, uris.report, title)
    pushes.record(uri, name, version, {pushes.PushTag.BLESSED: str(decision.blessed).lower(),
                                       pushes.PushTag.BLESSING: decision.reason})
    for note in notes:
        print(f"[bless] {note}")
    return GateResult(evaluation, decision, replayed, champion.version if champion else None, tuple(notes))


def read_gate(blessing_uri: str, estimate_uri: str) -> tuple[BlessingDecision, Optional[PreReleaseEstimate]]:
    """A ``bless`` step's decision and estimate, from its artifacts."""
    e = storage.read_json(estimate_uri)  # from_dict ignores the blessing's extra "notes"
    return BlessingDecision.from_dict(storage.read_json(blessing_uri)), (PreReleaseEstimate.from_dict(e) if e else None)
