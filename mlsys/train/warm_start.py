"""Warm start: continue training a registered model on a newer span of data.

``train.warm_start=models:/ctr@champion`` (or ``ctr/3``, or a package folder)
is resolved once, before any step runs, to a :class:`WarmStart`: the model
version and the digest of its weights. Steps take it like a config section,
so the transform and train fingerprints change when the alias moves.

Unseen ids get fresh embedding rows (not hashed buckets): the transform step
fits the preprocessor as a continuation of the source model's
(:meth:`CtrPreprocessor.continuing`), old ids keep their indices and new ids
are appended, and :func:`grow_state_dict` copies the old rows into the larger
tables of the new model. Hashing would fix the table sizes but make unrelated
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


def grow_state_dict(old: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``fresh`` (a newly built model's state) with ``old``'s values copied in.

    A tensor of the same shape is taken whole; an embedding table that gained
    rows along dim 0 (ids appended by the continued preprocessor) keeps its old
    rows and the fresh initialisation of the new ones. Anything else is a
    different architecture.

    >>> grow_state_dict({"t": torch.ones(2, 3)}, {"t": torch.zeros(4, 3)}, "ctr/1")["t"].sum().item()
    6.0
    """
    missing, extra = sorted(set(fresh) - set(old)), sorted(set(old) - set(fresh))
    if missing or extra:
        raise ConfigError(f"train.warm_start={source!r} has different parameters than the configured model "
                          f"(missing {missing[:3]}, unexpected {extra[:3]}); warm start from a model of the same architecture")
    out = {}
    for key, new in fresh.items():
        was = old[key]
        if was.shape == new.shape:
            out[key] = was.to(new.dtype)
        elif was.dim() == new.dim() >= 1 and was.shape[1:] == new.shape[1:] and was.shape[0] <= new.shape[0]:
            out[key] = torch.cat([was.to(new.dtype), new[was.shape[0]:]], dim=0)
        else:
            raise ConfigError(f"train.warm_start={source!r}: parameter {key} has shape {tuple(was.shape)}, the configured "
                              f"model needs {tuple(new.shape)}; warm start from a model of the same architecture")
    return out


def apply(strategy, payload: Optional[dict], spec: InputSpec, model: ModelConfig, seed: int, rank: int) -> None:
    """In a training worker, before the first step: load the warm-start weights, grown.

    ``payload`` is ``dataclasses.asdict(WarmStart)`` (None: a cold start, nothing to do);
    ``strategy`` is the worker's :class:`~mlsys.train.strategies.Strategy`. Every rank calls
    it. New rows take a fresh initialisation seeded by ``seed``, the same on every rank.
    """
    from safetensors.torch import load_file

    from mlsys.models import build_model
    from mlsys.registry.package import read_package

    if not payload:
        return
    warm = WarmStart(**payload)
    old = load_file(read_package(warm.package).path / "model.safetensors")
    torch.manual_seed(seed)
    fresh = build_model(spec, model).state_dict()
    strategy.load_full_state_dict(grow_state_dict(old, fresh, warm.uri or warm.package))
    if rank == 0:
        grown = {k: fresh[k].shape[0] - old[k].shape[0] for k in fresh if fresh[k].shape != old[k].shape}
        rows = ", ".join(f"{k} +{n}" for k, n in grown.items()) or "none"
        print(f"[train] warm start from {warm.uri} (version {warm.version}); new embedding rows: {rows}")


def base_preprocessor(warm: WarmStart):
    """The source model's fitted preprocessor (the vocabulary a warm start continues)."""
    from mlsys.registry.package import read_package

    return read_package(warm.package).preprocessor
