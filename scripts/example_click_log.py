"""Write an example click log with its own column names, and its item and user tables.

The data docs/data.md walks through (and tests/integration/test_own_data.py trains on):
``clicks.csv`` (``ts, uid, sku, clicked, device, price, tags``: ``tags`` multi-hot,
``|``-separated; a few prices missing), ``items.csv`` (``product, brand``) and
``users.parquet`` (``uid, segment``), with a planted signal: loyal users like one
brand, phones like sale items, cheap items sell.

    python scripts/example_click_log.py /tmp/shop     # prints the mlsys run overrides declaring it
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

TAGS = ["sale", "new", "eco", "kids", "gift"]


def write_click_log(folder: Path) -> list[str]:
    """A click log with a planted signal in its own columns, and its item and user tables; the overrides declaring it."""
    rng = np.random.default_rng(11)
    users, items, n = 150, 240, 12_000
    brand = rng.choice(["acme", "globex", "initech"], items)
    item_tags = [list(rng.choice(TAGS, rng.integers(0, 3), replace=False)) for _ in range(items)]
    segment = rng.choice(["new", "loyal"], users)
    uid, sku = rng.integers(0, users, n), rng.integers(0, items, n)
    device = rng.choice(["ios", "android", "web"], n)
    price = rng.gamma(2.0, 10.0, n).round(2)
    # Clicks: loyal users like acme, phones like sale items, cheap items sell.
    logit = (-0.5 + 1.5 * ((segment[uid] == "loyal") & (brand[sku] == "acme"))
             + 1.0 * ((device != "web") & np.array(["sale" in item_tags[s] for s in sku])) - 0.03 * price)
    clicked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    events = pd.DataFrame({"ts": 1_600_000_000 + rng.integers(0, 90 * 86_400, n), "uid": uid + 1, "sku": sku + 1,
                           "clicked": clicked, "device": device, "price": price,
                           "tags": ["|".join(item_tags[s]) for s in sku]})
    events.loc[rng.random(n) < 0.03, "price"] = np.nan  # missing values: the training mean
    events.to_csv(folder / "clicks.csv", index=False)
    pd.DataFrame({"product": np.arange(1, items + 1), "brand": brand}).to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"uid": np.arange(1, users + 1), "segment": segment}).to_parquet(folder / "users.parquet")
    return ["data=csv", f"data.path={folder / 'clicks.csv'}", "data.columns.user=uid", "data.columns.item=sku",
            "data.columns.timestamp=ts", "data.columns.label=clicked", "data.features.categorical=[device]",
            "data.features.numeric=[price]", "data.features.multi_hot=[tags]",
            f"data.item_table.path={folder / 'items.csv'}", "data.item_table.key=product", "data.item_table.categorical=[brand]",
            f"data.user_table.path={folder / 'users.parquet'}", "data.user_table.categorical=[segment]"]

if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "example-click-log")
    folder.mkdir(parents=True, exist_ok=True)
    print(" ".join(write_click_log(folder.resolve())))
