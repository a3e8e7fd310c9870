"""Transform: behaviour sequences per event, the preprocessor fitted on the train split,
and the serving tables (users with their latest history, items)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlsys import storage
from mlsys.data.config import DataConfig
from mlsys.data.preprocessor import CtrPreprocessor


@dataclass(frozen=True)
class TransformUris:
    train: str
    eval: str
    preprocessor: str
    users: str
    items: str


def transform(
    cfg: DataConfig,
    events_uri: str,
    users_uri: str,
    items_uri: str,
    out: TransformUris,
    training_set_uri: str = "",
    numeric: tuple[str, ...] | None = None,
    base: CtrPreprocessor | None = None,
) -> CtrPreprocessor:
    """Write the train/eval splits with histories, the fitted preprocessor and the serving tables.

    ``training_set_uri``: a point-in-time training set from the feature store, used instead of
    deriving histories here; ``numeric``: the numeric model inputs; ``base``: the preprocessor of
    the model a warm start continues (old ids keep their indices).
    """
    import ray

    from mlsys.data import datasets

    events = ray.data.read_parquet(events_uri)
    labelled = ray.data.read_parquet(training_set_uri) if training_set_uri else datasets.add_history(events, cfg.history_length)
    with_history = labelled.materialize()
    splits = {s: with_history.filter(expr=f"split == '{s}'") for s in ("train", "eval")}
    kwargs = {"numeric": numeric} if numeric is not None else {}
    preprocessor = CtrPreprocessor(cfg.history_length, cfg.max_genres, cfg.vocab_min_count, **kwargs)
    if base is not None:
        preprocessor.continuing(base)
    preprocessor.fit(splits["train"])
    splits["train"].write_parquet(out.train)
    splits["eval"].write_parquet(out.eval)
    preprocessor.save(out.preprocessor)
    users = pd.read_parquet(users_uri).merge(datasets.user_histories(events, cfg.history_length), on="user_id", how="left")
    users["history"] = [h if isinstance(h, list) else list(h) if h is not None else [] for h in users["history"]]
    storage.write_table(users, out.users)
    storage.write_table(pd.read_parquet(items_uri), out.items)
    return preprocessor
