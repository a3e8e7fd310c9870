"""How the trainer cuts a small dataset into one part per rank (as Ray Train's ``streaming_split`` does)."""

from __future__ import annotations

import pytest

from mlsys.train.trainer import split_bounds


@pytest.mark.parametrize("rows, world", [(10, 3), (80_367, 2), (7, 1), (1, 4), (0, 2)])
def test_equal_parts_have_the_same_rows_and_drop_less_than_a_rank(rows, world):
    bounds = split_bounds(rows, world, equal=True)
    sizes = [b - a for a, b in zip([0, *bounds], bounds)]
    assert len(sizes) == world and len(set(sizes)) == 1  # every rank steps as often (DDP)
    assert 0 <= rows - bounds[-1] < world


@pytest.mark.parametrize("rows, world", [(10, 3), (19_633, 2), (7, 1), (1, 4)])
def test_unequal_parts_keep_every_row_and_differ_by_at_most_one(rows, world):
    bounds = [0, *split_bounds(rows, world, equal=False), rows]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    assert len(sizes) == world and sum(sizes) == rows and max(sizes) - min(sizes) <= 1
