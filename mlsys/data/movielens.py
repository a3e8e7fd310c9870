"""MovieLens-100K, read from the ``recbole==1.2.1`` wheel without importing it.

The files' licence forbids redistribution: they are read where pip put them,
never copied into the repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from mlsys.errors import MissingDependencyError

USER_COLUMNS = ("user_id", "age", "gender", "occupation")
ITEM_COLUMNS = ("item_id", "year", "genres")


def movielens_dir() -> Path:
    """The folder holding ``ml-100k.inter``, ``.user`` and ``.item``."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("The MovieLens data set (data=movielens)", "recbole==1.2.1", "--no-deps")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise MissingDependencyError(f"The MovieLens data set (expected under {path})", "recbole==1.2.1", "--no-deps")
    return path


def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic files: tab-separated, headers like ``user_id:token``."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def load_users(path: Path) -> pd.DataFrame:
    df = _read_atomic(path / "ml-100k.user")
    return pd.DataFrame(
        {
            "user_id": df.user_id.astype(np.int64),
            "age": pd.to_numeric(df.age, errors="coerce").astype(np.float32),
            "gender": df.gender,
            "occupation": df.occupation,
        }
    )


def load_items(path: Path) -> pd.DataFrame:
    df = _read_atomic(path / "ml-100k.item")
    return pd.DataFrame(
        {
            "item_id": df.item_id.astype(np.int64),
            "year": pd.to_numeric(df.release_year, errors="coerce").astype(np.float32),
            "genres": [g.split() for g in df["class"]],
        }
    )
