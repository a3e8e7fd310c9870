"""Online learning, plain Python: the serving model kept fresh on what it served and what users did.

The streaming mode of continuous training (``monitor.online.enabled=true``). Every
``monitor.online.every_s`` seconds, or as soon as ``monitor.online.min_rows`` newly labelled rows
are in, the monitor takes the feature log's rows since the last update whose labels are in (served
at least ``monitor.quality.attribution_s`` ago), joined with their labels
(:func:`~mlsys.features.feature_log.join_labels`), and:

1. holds out the newest ``holdout`` share of those requests (the traffic closest to what comes next);
2. warm-starts from the version the alias serves: its own weights, its own fitted preprocessor
   (the same vocabulary: the package's two halves and the serving graph stay valid), ``epochs`` passes
   of Adam at ``lr`` over the rest (:func:`fine_tune`, in this process: no cluster, seconds);
3. the fast gate: on the held-out rows, the candidate's AUC must be at least the serving version's
   less ``max_auc_drop`` (:func:`gate`);
4. hands a passing candidate to ``publish`` (the api layer writes its package, registers it and pushes
   it: every app following the alias hot-reloads it).

It learns from what is served from its first pass on (rows logged earlier may have had no labels
collected). Rows are used once: the watermark (the newest row's log time) and each update's outcome
are kept in ``<monitor dir>/<model>/online.json``; a restarted monitor goes on from there::

    learner = OnlineLearner(cfg.monitor.online, state_uri, source, base, publish, attribution_s=3600)
    update = learner.consider(now=time.time())  # None: not due; else an Update (pushed or why not)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from mlsys import storage
from mlsys.evaluate.metrics import auc
from mlsys.features.feature_log import LOG_COLUMNS, join_labels
from mlsys.monitor.config import OnlineLearningConfig
from mlsys.models import MODEL_INPUTS
from mlsys.registry.package import ModelPackage


@dataclass
class Update:
    """One online-learning update: what it trained on, what the gate saw, and what became of it."""

    at: float
    base_version: str
    rows: int  # new labelled rows considered
    train_rows: int
    holdout_rows: int
    clicks: int
    auc_base: Optional[float]  # the serving version's AUC on the held-out rows
    auc_new: Optional[float]  # the candidate's
    passed: bool
    pushed: bool = False
    version: Optional[str] = None  # the registered version (a passing candidate)
    reason: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        aucs = (f"held-out AUC {self.auc_new:.4f} against {self.auc_base:.4f}" if self.auc_new is not None and self.auc_base is not None
                else "no held-out AUC")
        return (f"online update of v{self.base_version} on {self.train_rows:,} rows ({self.clicks:,} clicks): {aucs}; "
                f"{self.reason} ({self.seconds:.1f}s)")


@dataclass
class LearnerState:
    watermark: float = -math.inf  # rows logged at or before this (epoch s) were used (or served before it started)
    last_update: float = 0.0
    history: list[dict] = field(default_factory=list)


def labelled_rows(log: pd.DataFrame, labels: Optional[pd.DataFrame], since: float, until: float, attribution_s: float) -> pd.DataFrame:
    """The logged rows served in (``since``, ``until``], each with its label, oldest first."""
    if log.empty or labels is None or labels.empty:
        return log.iloc[:0].assign(label=pd.Series(dtype=np.float64))
    at = _seconds(log["logged_at"])
    rows = log[((at > since) & (at <= until)).to_numpy()].reset_index(drop=True)
    return join_labels(rows, labels, pd.Timedelta(seconds=attribution_s)) if not rows.empty else rows.assign(label=pd.Series(dtype=np.float64))


def _seconds(times: pd.Series) -> pd.Series:
    return (pd.to_datetime(times, utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def split_holdout(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the newest ``share`` of the requests (all their rows) held out."""
    last = rows.groupby("request_id", sort=False)["logged_at"].max().sort_values(kind="stable")
    held = set(last.index[len(last) - max(1, int(round(len(last) * share))):])
    mask = rows["request_id"].isin(held).to_numpy()
    return rows[~mask].reset_index(drop=True), rows[mask].reset_index(drop=True)


def _features(rows: pd.DataFrame) -> pd.DataFrame:
    """The raw feature columns of labelled log rows (what the preprocessor reads)."""
    return rows.drop(columns=[c for c in (*LOG_COLUMNS, "label") if c in rows.columns])


def _inputs(package: ModelPackage, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    return {k: v for k, v in package.preprocessor.transform_batch(_features(rows)).items() if k in MODEL_INPUTS}


def scores_of(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return torch.sigmoid(module(*(torch.from_numpy(inputs[k]) for k in MODEL_INPUTS))).numpy()


def fine_tune(package: ModelPackage, rows: pd.DataFrame, cfg: OnlineLearningConfig) -> torch.nn.Module:
    """The package's model, trained further on ``rows`` (raw features and a label): Adam, BCE."""
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    module = package.torch_model()
    inputs = {k: torch.from_numpy(v) for k, v in _inputs(package, rows).items()}
    labels = torch.from_numpy(rows["label"].to_numpy(dtype=np.float32))
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    module.train()
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(cfg.batch_size):
            loss = F.binary_cross_entropy_with_logits(module(*(inputs[k][batch] for k in MODEL_INPUTS)), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return module.eval()


def gate(labels: np.ndarray, base: np.ndarray, candidate: np.ndarray, max_auc_drop: float) -> tuple[bool, Optional[float], Optional[float], str]:
    """(passed, base AUC, candidate AUC, why) on the held-out rows."""
    a, b = auc(labels, base), auc(labels, candidate)
    if math.isnan(a) or math.isnan(b):
        return False, None, None, "not pushed: the held-out rows have one class only (no AUC to compare)"
    if b < a - max_auc_drop:
        return False, a, b, f"not pushed: held-out AUC {b:.4f} < the serving version's {a:.4f} - {max_auc_drop:g} (monitor.online.max_auc_drop)"
    return True, a, b, f"held-out AUC {b:.4f} >= the serving version's {a:.4f} - {max_auc_drop:g}"


# publish(package folder, update) -> (registered version, pushed, line): register it, push it
Publish = Callable[[str, Update], tuple[str, bool, str]]


def write_candidate(directory: Path, base: ModelPackage, module: torch.nn.Module, update: Update, holdout: pd.DataFrame) -> Path:
    """The candidate's package: the base's preprocessor, tables and training statistics with the new
    weights. Raises RuntimeError when the written package's ONNX graph does not score the held-out
    rows as the trained module does (what would serve is not what the gate measured)."""
    from mlsys.registry.package import read_package, write_package
    from mlsys.registry.scoring import PackageScorer

    lineage = dict(base.manifest.get("lineage", {}))
    lineage.update(online_learning={"base_version": update.base_version, "rows": update.rows, "train_rows": update.train_rows,
                                    "holdout_rows": update.holdout_rows, "auc_base": update.auc_base, "auc_new": update.auc_new},
                   warm_start={"version": update.base_version, "package": str(base.path)}, tuned={})
    statistics = base.path / "statistics.json"
    path = write_package(directory, model=module, model_config=base.model_config, preprocessor=base.preprocessor, users=base.users,
                         items=base.items, lineage=lineage, statistics=str(statistics) if statistics.exists() else None)
    served = PackageScorer(read_package(str(path), cache_dir=directory.parent / "check")).score(_features(holdout))
    trained = scores_of(module, _inputs(base, holdout))
    worst = float(np.max(np.abs(served - trained))) if len(holdout) else 0.0
    if worst > 1e-4:
        raise RuntimeError(f"the candidate's ONNX graph scores the held-out rows up to {worst:.2g} away from the trained model's")
    return path


class OnlineLearner:
    """``source()`` -> (feature log, labels); ``base()`` -> (version, package) the alias serves now."""

    def __init__(self, cfg: OnlineLearningConfig, state_uri: str, source: Callable[[], tuple], base: Callable[[], tuple[str, ModelPackage]],
                 publish: Publish, attribution_s: float):
        self.cfg, self.state_uri, self.attribution_s = cfg, state_uri, attribution_s
        self._source, self._base, self._publish = source, base, publish
        self.state = self._load()

    def _load(self) -> Optional[LearnerState]:
        if not storage.exists(self.state_uri):
            return None  # the first consider() starts the watermark
        d = json.loads(storage.read_text(self.state_uri))
        return LearnerState(-math.inf if d["watermark"] is None else float(d["watermark"]), float(d["last_update"]), d["history"])

    def _save(self) -> None:
        d = asdict(self.state)
        d["watermark"] = None if math.isinf(self.state.watermark) else self.state.watermark
        storage.write_text(self.state_uri, json.dumps(d, indent=1))

    def consider(self, now: Optional[float] = None) -> Optional[Update]:
        """An update when one is due (enough new labelled rows, or ``every_s`` since the last one)."""
        now = time.time() if now is None else now
        if self.state is None:  # learns from what is served from now on (older rows may have no labels collected)
            self.state = LearnerState(watermark=now, last_update=now)
            self._save()
            return None
        log, labels = self._source()
        if labels is None:
            return None
        rows = labelled_rows(log, labels, self.state.watermark, now - self.attribution_s, self.attribution_s)
        due = len(rows) >= self.cfg.min_rows or (len(rows) >= self.cfg.min_new_rows and now - self.state.last_update >= self.cfg.every_s)
        if not due:
            return None
        started = time.perf_counter()
        rows = rows.iloc[-self.cfg.max_rows:] if len(rows) > self.cfg.max_rows else rows
        version, package = self._base()
        train, holdout = split_holdout(rows, self.cfg.holdout)
        module = fine_tune(package, train, self.cfg)
        held = _inputs(package, holdout)
        y = holdout["label"].to_numpy(dtype=np.float64)
        passed, a, b, why = gate(y, scores_of(package.torch_model(), held), scores_of(module, held), self.cfg.max_auc_drop)
        update = Update(now, version, len(rows), len(train), len(holdout), int(rows["label"].sum()), a, b, passed, reason=why)
        if passed:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mlsys-online-") as tmp:
                try:
                    path = write_candidate(Path(tmp) / "package", package, module, update, holdout)
                except RuntimeError as e:
                    update.passed, update.reason = False, f"not pushed: {e}"
                else:
                    update.version, update.pushed, update.reason = self._publish(str(path), update)
        update.seconds = time.perf_counter() - started
        self.state.watermark = float(_seconds(rows["logged_at"]).max())
        self.state.last_update = now
        self.state.history.append({**asdict(update), "at": round(update.at, 3)})
        self._save()
        return update
