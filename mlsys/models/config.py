"""Typed model configuration and the input contract between data and model."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ModelName(str, Enum):
    """The zoo (docs/models.md): ``model=<name>`` picks ``configs/model/<name>.yaml``."""

    lr = "lr"
    fm = "fm"
    widedeep = "widedeep"
    deepfm = "deepfm"
    dcnv2 = "dcnv2"
    din = "din"
    bst = "bst"
    bst_cached = "bst_cached"


@dataclass
class ModelConfig:
    """``model=din model.embed_dim=32 model.attention_dims=[64,16]``.

    Shared: ``embed_dim``, ``mlp_dims`` (the deep tower; unused by lr, fm), ``dropout``.
    dcnv2: ``cross_layers``. din: ``attention_dims`` (the activation unit's MLP).
    bst, bst_cached: ``attention_heads`` (must divide embed_dim), ``transformer_layers``.
    """

    name: ModelName = ModelName.deepfm
    embed_dim: int = 16
    mlp_dims: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    cross_layers: int = 3
    attention_dims: list[int] = field(default_factory=lambda: [64, 16])
    attention_heads: int = 2
    transformer_layers: int = 1

    def __post_init__(self):
        from mlsys.config import require

        require(self.embed_dim >= 1, "model.embed_dim", self.embed_dim, ">= 1")
        require(all(d >= 1 for d in self.mlp_dims), "model.mlp_dims", list(self.mlp_dims), "positive widths")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "in [0, 1)")
        require(1 <= self.cross_layers <= 16, "model.cross_layers", self.cross_layers, "in [1, 16]")
        require(
            len(self.attention_dims) >= 1 and all(d >= 1 for d in self.attention_dims),
            "model.attention_dims", list(self.attention_dims), "one or more positive widths",
        )
        require(1 <= self.transformer_layers <= 8, "model.transformer_layers", self.transformer_layers, "in [1, 8]")
        require(
            self.attention_heads >= 1
            and (ModelName(self.name) not in (ModelName.bst, ModelName.bst_cached) or self.embed_dim % self.attention_heads == 0),
            "model.attention_heads", self.attention_heads, f">= 1 and dividing model.embed_dim={self.embed_dim}",
        )


@dataclass(frozen=True)
class InputSpec:
    """What the fitted preprocessor produces, so a model can size itself.

    Tensors (B = batch): ``categorical`` (B, F) int64 (one id per categorical field),
    ``multi_hot`` (B, K * W) int64 (K multi-hot features of ``multi_hot_length`` W ids each,
    side by side), ``history`` (B, L) int64 of item indices, ``numeric`` (B, N) float32.
    Index 0 is padding, 1 the out-of-vocabulary bucket. Every count may be 0 but F >= 2
    (the user and the item).
    """

    categorical_fields: tuple[str, ...]
    categorical_sizes: tuple[int, ...]
    item_field: str
    multi_hot_fields: tuple[str, ...]
    multi_hot_sizes: tuple[int, ...]
    multi_hot_length: int
    history_length: int
    numeric_fields: tuple[str, ...]

    def __post_init__(self):
        assert len(self.categorical_fields) == len(self.categorical_sizes)
        assert len(self.multi_hot_fields) == len(self.multi_hot_sizes)
        assert self.item_field in self.categorical_fields

    @property
    def item_size(self) -> int:
        return self.categorical_sizes[self.categorical_fields.index(self.item_field)]

    @property
    def pooled_fields(self) -> int:
        """Embeddings per row once lists are pooled: the categorical fields, each multi-hot feature, the history."""
        return len(self.categorical_fields) + len(self.multi_hot_fields) + 1

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class UserFields:
    """The inputs that are the user's own, the same in every row of one user's request: positions
    among ``spec.categorical_fields`` and ``spec.numeric_fields``. Scoring by user side encodes them
    once with the history; every other input (item, context, multi-hot) is read per candidate.

    >>> UserFields.of(InputSpec(("user_id", "item_id", "gender"), (3, 5, 4), "item_id", (), (), 0, 2, ("age",)),
    ...               ("user_id", "gender", "age"))
    UserFields(categorical=(0, 2), numeric=(0,))
    """

    categorical: tuple[int, ...] = ()
    numeric: tuple[int, ...] = ()

    @classmethod
    def of(cls, spec: InputSpec, names) -> "UserFields":
        """The positions of those of ``names`` that are categorical or numeric inputs of ``spec`` (others ignored)."""
        names = set(names)
        assert spec.item_field not in names, "the item is the candidate's, never a user field"
        return cls(tuple(i for i, f in enumerate(spec.categorical_fields) if f in names),
                   tuple(i for i, f in enumerate(spec.numeric_fields) if f in names))

    def candidate_categorical(self, spec: InputSpec) -> tuple[int, ...]:
        return tuple(i for i in range(len(spec.categorical_fields)) if i not in self.categorical)

    def candidate_numeric(self, spec: InputSpec) -> tuple[int, ...]:
        return tuple(i for i in range(len(spec.numeric_fields)) if i not in self.numeric)


MODEL_INPUTS = ("categorical", "multi_hot", "history", "numeric")
