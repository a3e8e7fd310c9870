"""``logger=wandb`` in offline mode: the run files hold the same metrics MLflow got."""

import json
from pathlib import Path

import pytest

import mlsys


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run file (``run-<id>.wandb``: a 7-byte header,
    then LevelDB-style log records in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, out, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_logger_none_writes_no_wandb_files(trained):
    home, _, _ = trained
    assert not (home / "wandb").exists()


def test_wandb_offline_run_holds_every_epoch_and_the_evaluation(trained):
    home, overrides, first = trained
    again = mlsys.run_pipeline([*overrides, "logger=wandb"])
    # Choosing a logger changes no fingerprint: every step is reused, and still logged.
    assert [s.status for s in again.steps] == ["cached"] * len(again.steps)

    runs = sorted((home / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    records = wandb_records(runs[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == f"ctr-{again.run_id[:8]}" and run.project == "mlsys"
    config = _items(run.config.update)
    assert config["train"]["max_epochs"] == 1 and config["logger"]["name"] == "wandb"

    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    train_step = next(s for s in first.steps if s.name == "train")
    train = {name: value for name, value, step in train_step.metrics if step == 1}
    epoch1 = next(h for h in history if h.get("train/epoch") == 1)
    for name in ("eval_auc", "eval_user_auc", "eval_logloss", "eval_calibration", "train_loss"):
        assert epoch1[f"train/{name}"] == pytest.approx(train[name]), name

    summary: dict = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    evaluation = dict((n, v) for n, v, _ in next(s for s in first.steps if s.name == "evaluate").metrics)
    assert summary["evaluate/eval_auc"] == pytest.approx(evaluation["eval_auc"])
    assert summary["evaluate/eval_user_auc"] == pytest.approx(evaluation["eval_user_auc"])
    assert summary["evaluate/eval_calibration"] == pytest.approx(evaluation["eval_calibration"])
