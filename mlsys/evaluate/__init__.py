"""Metrics, slices and (later) the blessing gate."""

from mlsys.evaluate.metrics import auc, calibration, ctr_metrics, logloss, user_auc

__all__ = ["auc", "calibration", "ctr_metrics", "logloss", "user_auc"]
