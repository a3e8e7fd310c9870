"""Warm start: continue training a registered model on a newer span of data.

``train.warm_start=models:/ctr@champion`` (or ``ctr/3``, or a package folder)
is resolved once, before any step runs, to a :class:`WarmStart`: the model
version and the digest of its weights. Steps take it like a config section,
so the transform and train fingerprints change when the alias moves.

Unseen ids get fresh embedding rows (not hashed buckets): the transform step
fits the preprocessor as a continuation of the source model's
(:meth:`CtrPreprocessor.continuing`), old ids keep their indices and new ids
are appended, and :func:`grow_state_dict` copies the old rows into the larger
table of the new model, block by block. Hashing would fix the table sizes but make unrelated
ids share rows; appending keeps every old id's learned row intact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from mlsys.errors import ConfigError, ModelNotFoundError
from mlsys.models import InputSpec, ModelConfig

# Fields that change no parameter shape: a different value is no reason to refuse.
_SHAPE_FREE_FIELDS = ("dropout",)


@dataclass(frozen=True)
class WarmStart:
    """A resolved warm-start source; ``WarmStart()`` is a cold start.

    >>> WarmStart().active
    False
    """

    uri: Optional[str] = None
    model_name: Optional[str] = None
    version: Optional[str] = None
    package: Optional[str] = None
    weights_sha256: Optional[str] = None

    @property
    def active(self) -> bool:
        return self.package is not None

    def lineage(self) -> dict:
        """What a model package records about where its weights started."""
        return dataclasses.asdict(self) if self.active else {}


def resolve(uri: Optional[str], tracking_uri: str, model: ModelConfig) -> WarmStart:
    """``resolve("models:/ctr@champion", uri, cfg.model)`` -> the version, checked against ``model``.

    Raises :class:`ConfigError` naming ``train.warm_start`` when the URI does not
    resolve or the registered model's architecture differs from ``model``.
    """
    from mlsys.registry import mlflow_store
    from mlsys.registry.package import read_package

    if not uri:
        return WarmStart()
    name, version, source = None, None, uri
    if not (Path(uri) / "manifest.json").exists():
        try:
            resolved = mlflow_store.resolve(tracking_uri, uri)
        except ModelNotFoundError as e:
            raise ConfigError(f"train.warm_start={uri!r} does not resolve ({e}); set it to a registered model "
                              "(`models:/ctr@champion`, `ctr/3`) or a package folder, or null for a cold start") from None
        name, version, source = resolved.name, resolved.version, resolved.source
    try:
        package = read_package(source)
    except ModelNotFoundError as e:
        raise ConfigError(f"train.warm_start={uri!r} points at no readable model package ({e})") from None
    check_compatible(uri, package.model_config, model)
    return WarmStart(uri, name, version, source, package.manifest["files"]["model.safetensors"])


def check_compatible(uri: str, source: ModelConfig, target: ModelConfig) -> None:
    """The source model must have the configured architecture (dropout may differ).

    >>> check_compatible("ctr/1", ModelConfig(embed_dim=8), ModelConfig(embed_dim=16))
    Traceback (most recent call last):
    ...
    mlsys.errors.ConfigError: Bad configuration: train.warm_start='ctr/1' is a model with embed_dim=8, but the config has embed_dim=16; ...
    """
    a, b = _shape_fields(source), _shape_fields(target)
    diffs = [k for k in b if a.get(k) != b[k]]
    if diffs:
        have = ", ".join(f"{k}={a.get(k)}" for k in diffs)
        want = ", ".join(f"{k}={b[k]}" for k in diffs)
        overrides = " ".join(f"model.{k}={str(a.get(k)).replace(' ', '')}" for k in diffs)
        raise ConfigError(
            f"train.warm_start={uri!r} is a model with {have}, but the config has {want}; "
            f"warm start needs the same architecture: set {overrides}, or train.warm_start=null for a cold start"
        )


def _shape_fields(cfg: ModelConfig) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _SHAPE_FREE_FIELDS}
    d["name"] = str(getattr(cfg.name, "value", cfg.name))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


SPARSE_TABLE = "sparse.table.weight"  # every model's one embedding table (mlsys.models.blocks.SparseEmbeddings)


def grow_state_dict(old: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], source: str,
                    old_spec: InputSpec, spec: InputSpec) -> dict[str, torch.Tensor]:
    """``fresh`` (a newly built model's state for ``spec``) with ``old``'s values copied in.

    A tensor of the same shape is taken whole. In the embedding table every
    input's block (:func:`~mlsys.models.blocks.table_segments`) keeps its old rows
    and gets the fresh initialisation of the rows appended by the continued
    preprocessor, so an old id's row moves with its block but keeps its values.
    Anything else is a different architecture.
    """
    from mlsys.models.blocks import table_segments

    missing, extra = sorted(set(fresh) - set(old)), sorted(set(old) - set(fresh))
    if missing or extra:
        raise ConfigError(f"train.warm_start={source!r} has different parameters than the configured model "
                          f"(missing {missing[:3]}, unexpected {extra[:3]}); warm start from a model of the same architecture")
    out = {}
    for key, new in fresh.items():
        was = old[key].to(new.dtype)
        if was.shape == new.shape and (key != SPARSE_TABLE or old_spec == spec):
            out[key] = was
        elif key == SPARSE_TABLE and was.shape[1:] == new.shape[1:]:
            out[key] = _grow_blocks(was, new, table_segments(old_spec), table_segments(spec), source)
        else:
            raise ConfigError(f"train.warm_start={source!r}: parameter {key} has shape {tuple(was.shape)}, the configured "
                              f"model needs {tuple(new.shape)}; warm start from a model of the same architecture")
    return out


def _grow_blocks(was: torch.Tensor, new: torch.Tensor, old_blocks: dict, blocks: dict, source: str) -> torch.Tensor:
    if list(old_blocks) != list(blocks) or was.shape[0] != sum(n for _, n in old_blocks.values()):
        raise ConfigError(f"train.warm_start={source!r} embeds inputs {list(old_blocks)}, the configured model "
                          f"{list(blocks)}; warm start from a model trained on the same columns")
    parts = []
    for name, (start, rows) in blocks.items():
        old_start, old_rows = old_blocks[name]
        if old_rows > rows:
            raise ConfigError(f"train.warm_start={source!r}: {name} has {old_rows} embedding rows, the continued "
                              f"vocabulary only {rows}; warm start needs the source model's preprocessor continued")
        parts += [was[old_start : old_start + old_rows], new[start + old_rows : start + rows]]
    return torch.cat(parts)


def apply(strategy, payload: Optional[dict], spec: InputSpec, model: ModelConfig, seed: int, rank: int) -> None:
    """In a training worker, before the first step: load the warm-start weights, grown.

    ``payload`` is ``dataclasses.asdict(WarmStart)`` (None: a cold start, nothing to do);
    ``strategy`` is the worker's :class:`~mlsys.train.strategies.Strategy`. Every rank calls
    it. New rows take a fresh initialisation seeded by ``seed``, the same on every rank.
    """
    from safetensors.torch import load_file

    from mlsys.models.blocks import table_segments
    from mlsys.models.zoo import build_model
    from mlsys.registry.package import read_package

    if not payload:
        return
    warm = WarmStart(**payload)
    package = read_package(warm.package)
    old = load_file(package.path / "model.safetensors")
    torch.manual_seed(seed)
    fresh = build_model(spec, model).state_dict()
    strategy.load_full_state_dict(grow_state_dict(old, fresh, warm.uri or warm.package, package.spec, spec))
    if rank == 0:
        grown = {k: new[1] - old[1] for (k, new), old in zip(table_segments(spec).items(), table_segments(package.spec).values())}
        rows = ", ".join(f"{k} +{n}" for k, n in grown.items() if n) or "none"
        print(f"[train] warm start from {warm.uri} (version {warm.version}); new embedding rows: {rows}")


def base_preprocessor(warm: WarmStart):
    """The source model's fitted preprocessor (the vocabulary a warm start continues)."""
    from mlsys.registry.package import read_package

    return read_package(warm.package).preprocessor
