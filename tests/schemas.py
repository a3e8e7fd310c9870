"""Feature schemas for tests that need one without composing a data set's config."""

from __future__ import annotations

from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table


def movielens_like(history_length: int = 20, multi_hot_length: int = 4) -> FeatureSchema:
    """MovieLens' declared schema (configs/data/movielens.yaml): user gender, occupation, age; item year, genres."""
    return FeatureSchema(
        features=(Feature("gender", Kind.categorical, Table.users), Feature("occupation", Kind.categorical, Table.users),
                  Feature("age", Kind.numeric, Table.users), Feature("year", Kind.numeric, Table.items),
                  Feature("genres", Kind.multi_hot, Table.items)),
        sources={"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "rating": "rating"},
        history_length=history_length,
        multi_hot_length=multi_hot_length,
    )


CATEGORICAL = movielens_like().categorical  # ('user_id', 'item_id', 'gender', 'occupation')
NUMERIC = movielens_like().numeric  # ('age', 'year')


def data_config(name: str = "movielens", *overrides: str):
    """The DataConfig of ``configs/data/<name>.yaml`` (its declared schema), with Hydra ``overrides``
    ("data.rows=6000"), composed as ``mlsys run data=<name> ...`` composes it."""
    from mlsys.api.config import compose_config

    return compose_config([f"data={name}", *overrides]).data
