"""Reading a Ray Train run's folder from outside the run (tests that kill things mid-training)."""

from __future__ import annotations

import json
from pathlib import Path


def registered_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints Ray Train has registered (listed in its run snapshot), oldest first.

    A folder on storage is not enough: a worker killed after uploading but before the
    controller took its report leaves a folder that the restarted group never sees.
    """
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
        return []
    return [run_dir / r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]]
