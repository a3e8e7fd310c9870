"""Synthetic, already-encoded CTR data for any :class:`InputSpec`: strategy tests and memory benchmarks.

The raw-event generator (``data=synthetic``) exercises the whole pipeline; this one
skips ingestion and the preprocessor so a test can train a 2-worker model in seconds,
or a benchmark can size embedding tables to 50M+ parameters by changing the spec.
Clicks follow a planted logistic signal: a latent score per user and per item
(seeded), the history's mean item score, and the first numeric feature.

>>> spec = synthetic_spec(users=500, items=800)
>>> batch = encoded_batch(spec, np.arange(4), seed=0)
>>> batch["categorical"].shape, batch["label"].dtype
((4, 4), dtype('float32'))
"""

from __future__ import annotations

import numpy as np

from mlsys.models import InputSpec

from mlsys.data.feature_schema import ITEM, USER

FIELDS = (USER, ITEM, "c1", "c2")


def synthetic_spec(users: int, items: int, tags: int = 20, history_length: int = 10) -> InputSpec:
    """An input contract of a typical click log: ``users`` and ``items`` vocabularies, two more
    categorical fields, one multi-hot feature of ``tags`` values, two numbers."""
    return InputSpec(
        categorical_fields=FIELDS,
        categorical_sizes=(users + 2, items + 2, 4, 23),
        item_field=ITEM,
        multi_hot_fields=("tags",),
        multi_hot_sizes=(tags + 2,),
        multi_hot_length=3,
        history_length=history_length,
        numeric_fields=("n1", "n2"),
    )


def _latent(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, size)


def encoded_batch(spec: InputSpec, row_ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Rows ``row_ids`` of the synthetic set: the tensors the models take, plus ``label``."""
    rng = np.random.default_rng([seed, int(row_ids[0]) if len(row_ids) else 0])
    n, sizes = len(row_ids), spec.categorical_sizes
    item = spec.categorical_fields.index(spec.item_field)
    # Zipf-like popularity: low indices are frequent; 0 is padding, 1 out-of-vocabulary.
    cat = np.stack([2 + (rng.pareto(1.2, n) * s / 50).astype(np.int64) % (s - 2) for s in sizes], axis=1)
    history = 2 + (rng.pareto(1.2, (n, spec.history_length)) * sizes[item] / 50).astype(np.int64) % (sizes[item] - 2)
    history[rng.random((n, spec.history_length)) < 0.3] = 0  # shorter histories, padded
    multi_hot = np.concatenate([rng.integers(2, size, (n, spec.multi_hot_length)) for size in spec.multi_hot_sizes], axis=1) \
        if spec.multi_hot_fields else np.zeros((n, 0), np.int64)
    numeric = rng.normal(0.0, 1.0, (n, len(spec.numeric_fields))).astype(np.float32)
    user_score, item_score = _latent(sizes[0], seed + 1), _latent(sizes[item], seed + 2)
    hist_score = np.where(history > 0, item_score[history], 0.0).sum(1) / np.maximum((history > 0).sum(1), 1)
    logit = 1.2 * user_score[cat[:, 0]] + 1.2 * item_score[cat[:, item]] + 0.5 * hist_score + 0.5 * numeric[:, 0] - 0.3
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return {"categorical": cat, "multi_hot": multi_hot, "history": history, "numeric": numeric, "label": label}


def synthetic_dataset(spec: InputSpec, rows: int, seed: int = 0, start: int = 0, blocks: int = 4):
    """A Ray Dataset of rows ``start .. start + rows`` (same rows for the same seed), generated in
    parallel; an eval set with the same planted signal takes other rows of the same seed.

    >>> synthetic_dataset(synthetic_spec(100, 100), rows=1000).count()  # doctest: +SKIP
    1000
    """
    import ray.data

    per_block = -(-rows // blocks)
    return ray.data.range(rows, override_num_blocks=blocks).map_batches(
        lambda b: encoded_batch(spec, b["id"] + start, seed), batch_size=per_block, batch_format="numpy"
    )
