"""Monitoring: online sketches, drift, skew, quality and freshness signals, alert rules, the retrain trigger."""
