"""Serving statistics windows for tests, written as serving replicas write them: the real
:class:`~mlsys.monitor.online.WindowSketcher` over rows of a data set, with a planted shift."""

from __future__ import annotations


def sketch_windows(cfg, model: str, version: str, events: str, end: float, shifts=(0.0, 0.2)) -> None:
    """One ended window per shift, oldest first, the last ending by ``end``: 40 requests of 20 rows of the
    Parquet ``events`` each (rows_per_request from ``cfg``), the share of gender "F" moved by the shift
    (men turned into women at random: the planted drift of issue 15), scores uniform in [0.2, 0.4]."""
    import numpy as np
    import pyarrow.parquet as pq

    from mlsys.monitor.config import monitor_dir
    from mlsys.monitor.online import WindowSketcher

    stats = cfg.serve.monitoring
    rows = pq.read_table(events).to_pandas().drop(columns=["label", "split", "timestamp"], errors="ignore")
    rng = np.random.default_rng(0)
    male = float((rows.gender == "M").mean())
    sketcher = WindowSketcher(stats, monitor_dir(stats.path, cfg.home.root), model, replica="test", clock=lambda: end)
    for w, shift in enumerate(shifts):
        at = end - (len(shifts) - w) * stats.window_s - 1  # every window has ended by `end`
        for r in range(40):
            frame = rows.sample(20, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
            frame.loc[(frame.gender == "M") & (rng.random(20) < shift / male), "gender"] = "F"
            sketcher.observe(f"w{w}-{r}", version, lambda f=frame: f, rng.uniform(0.2, 0.4, len(frame)), at=at)
    sketcher.close()
