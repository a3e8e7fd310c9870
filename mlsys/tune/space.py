"""Search spaces written in config, and the tuned configs they lead to (no Ray here).

``tune.search_space`` maps a config key to a distribution, in either form::

    search_space:                  # nested keys flatten: model.embed_dim, model.dropout, ...
      model:
        embed_dim: choice [8, 16, 32]
        dropout: uniform [0.0, 0.3]
      train.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}

Distributions: ``choice [v, ...]`` (any values, lists too: ``model.mlp_dims: choice [[64, 32], [128, 64]]``),
``uniform [low, high]``, ``loguniform [low, high]`` (floats), ``int [low, high]`` (both ends included).
Keys are ``model.<field>`` (any :class:`ModelConfig` field) or ``train.<field>`` for the fields in
:data:`TUNABLE_TRAIN_FIELDS`. Each key, distribution and bound is checked here, by building the
configs it would produce, so a bad space fails before any trial starts.

>>> space = SearchSpace.parse({"model.embed_dim": "choice [8, 16]", "train.learning_rate": "loguniform [1e-4, 1e-2]"})
>>> model, train = apply({"model.embed_dim": 8, "train.learning_rate": 0.003}, ModelConfig(), TrainConfig())
>>> model.embed_dim, train.learning_rate
(8, 0.003)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import yaml

from mlsys import storage
from mlsys.errors import ConfigError
from mlsys.models.config import ModelConfig
from mlsys.train.config import TrainConfig
from mlsys.tune.config import TuneConfig

# A trial's epochs are tune.max_epochs, its resources tune.workers_per_trial/cpus_per_worker, its
# seed tune.seed: the train fields that are tuned are those that change what is learnt, not how it runs.
TUNABLE_TRAIN_FIELDS = ("batch_size", "learning_rate", "weight_decay")
_SECTIONS = {"model": ModelConfig, "train": TrainConfig}


class Kind(str, Enum):
    choice = "choice"
    uniform = "uniform"
    loguniform = "loguniform"
    int = "int"


@dataclass(frozen=True)
class Distribution:
    """One key's distribution: ``Distribution("model.embed_dim", Kind.choice, (8, 16, 32))``;
    ``values`` are the options of a choice, else ``(low, high)``."""

    key: str
    kind: Kind
    values: tuple

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.key.split(".", 1)[1]

    def options(self) -> list:
        """A choice's options as searchers store them (Optuna keeps only scalars: a list becomes its JSON)."""
        return [json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for v in self.values]

    def decode(self, value: Any) -> Any:
        """A searcher's value back to the config's: the inverse of :meth:`options`."""
        if self.kind is Kind.choice and isinstance(value, str) and value in self.options() and value not in self.values:
            return json.loads(value)
        if self.kind is Kind.int:
            return int(value)
        return value

    def describe(self) -> str:
        return f"{self.key}: {self.kind.value} {json.dumps(list(self.values))}"


@dataclass(frozen=True)
class SearchSpace:
    """The checked ``tune.search_space``: one :class:`Distribution` per key, in config order."""

    distributions: tuple[Distribution, ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any], model: ModelConfig | None = None, train: TrainConfig | None = None) -> "SearchSpace":
        """Parse and check ``tune.search_space``; a :class:`ConfigError` names the first bad key.

        Each option (or bound) is applied to ``model``/``train`` (the defaults when not given), so a
        value those configs refuse fails here, before any trial starts.
        """
        space = cls(tuple(_distribution(key, value) for key, value in _flatten(raw or {}, "").items()))
        for d in space.distributions:
            _check_values(d, model or ModelConfig(), train or TrainConfig())
        return space

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.distributions)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's flat ``{"model.embed_dim": 16, ...}`` as config values (see :meth:`Distribution.decode`)."""
        by_key = {d.key: d for d in self.distributions}
        return {k: by_key[k].decode(v) if k in by_key else v for k, v in params.items()}


def apply(params: Mapping[str, Any], model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """New configs with ``params`` (flat keys, config values) in place; each is checked as it is built.

    >>> apply({"model.dropout": 0.2}, ModelConfig(), TrainConfig())[0].dropout
    0.2
    """
    changes: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in params.items():
        section, name = _split(key)
        _field_type(section, name, key)
        changes[section][name] = value
    try:
        return dataclasses.replace(model, **changes["model"]), dataclasses.replace(train, **changes["train"])
    except TypeError as e:  # a field of the wrong kind (e.g. a list where a number belongs)
        raise ConfigError(f"tuned parameters {dict(params)} do not fit the config: {e}") from None


def tuned_configs(best_uri: str, model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The train step's configs: ``model``/``train`` with the tune step's best parameters in place
    (unchanged when tuning was off, ``best_uri == ""``).

    The tuned ``train`` keeps the train step's own epochs, resources and seed: it trains the best
    configuration on the whole training split.
    """
    if not best_uri:
        return model, train
    return apply(storage.read_json(best_uri)["params"], model, train)


def trial_configs(params: Mapping[str, Any], model: ModelConfig, train: TrainConfig, tune: TuneConfig) -> tuple[ModelConfig, TrainConfig]:
    """A trial's configs: a searcher's ``params`` in place, and the trial's epochs and resources from ``tune``.

    A trial checkpoints every epoch (an interrupted trial continues from its last epoch), keeps
    one checkpoint, starts cold (no warm start) and leaves a failure to Tune.
    """
    space = SearchSpace.parse(tune.search_space, model, train)
    model_cfg, train_cfg = apply(space.decode(params), model, train)
    return model_cfg, dataclasses.replace(
        train_cfg, max_epochs=tune.max_epochs, num_workers=tune.workers_per_trial, cpus_per_worker=tune.cpus_per_worker,
        checkpoint_every=1, checkpoints_to_keep=1, max_failures=0, warm_start=None,
    )


def tuned_model(best_uri: str, model: ModelConfig) -> ModelConfig:
    """The tuned model config alone (the package step rebuilds the trained module from it)."""
    return tuned_configs(best_uri, model, TrainConfig())[0]


# -- parsing and checks ---------------------------------------------------------------


def _flatten(raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"model": {"dropout": d}}`` -> ``{"model.dropout": d}``; a one-key mapping of a distribution name is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and not (len(value) == 1 and next(iter(value)) in Kind.__members__):
            flat.update(_flatten(value, f"{full}."))
        else:
            flat[full] = value
    return flat


def _split(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    if section not in _SECTIONS or not name or "." in name:
        raise ConfigError(f"tune.search_space key '{key}' must be model.<field> or train.<field> "
                          f"(e.g. model.embed_dim, train.learning_rate)")
    return section, name


def _field_type(section: str, name: str, key: str) -> Any:
    cls = _SECTIONS[section]
    hints = typing.get_type_hints(cls)
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        hint = f" (did you mean '{section}.{close[0]}')" if close else f"; its fields: {', '.join(hints)}"
        raise ConfigError(f"tune.search_space key '{key}' is not a field of {cls.__name__}{hint}")
    if section == "train" and name not in TUNABLE_TRAIN_FIELDS:
        raise ConfigError(f"tune.search_space key '{key}' cannot be tuned (trial epochs are tune.max_epochs, resources "
                          f"tune.workers_per_trial and tune.cpus_per_worker); tunable train keys: "
                          f"{', '.join('train.' + f for f in TUNABLE_TRAIN_FIELDS)}")
    return hints[name]


def _distribution(key: str, value: Any) -> Distribution:
    """``"choice [8, 16]"`` or ``{"choice": [8, 16]}`` -> a :class:`Distribution` of ``key``."""
    section, name = _split(key)
    _field_type(section, name, key)
    kinds = ", ".join(k.value for k in Kind)
    if isinstance(value, str):
        kind, _, rest = value.strip().partition(" ")
        try:
            args = _values(rest) if rest.strip() else None
        except (ValueError, yaml.YAMLError):
            raise ConfigError(f"tune.search_space {key}={value!r}: the values after '{kind}' must be a list like [8, 16]") from None
    elif isinstance(value, Mapping) and len(value) == 1:
        kind, args = next(iter(value.items()))
    else:
        raise ConfigError(f"tune.search_space {key}={value!r} must be a distribution such as 'choice [8, 16]' "
                          f"or {{loguniform: [1.0e-4, 1.0e-1]}} ({kinds})")
    if kind not in Kind.__members__:
        raise ConfigError(f"tune.search_space {key}: unknown distribution {kind!r}; use one of {kinds}")
    if not isinstance(args, (list, tuple)) or not args:
        raise ConfigError(f"tune.search_space {key}: {kind} needs a non-empty list of values, e.g. {kind} [8, 16]")
    kind = Kind(kind)
    if kind is not Kind.choice:
        args = _bounds(key, kind, args)
    return Distribution(key, kind, tuple(args))


def _values(text: str) -> Any:
    """``[1e-3, 1e-2]`` as JSON (YAML 1.1 reads ``1e-3`` as a string), else YAML (``[din, bst]``)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def _bounds(key: str, kind: Kind, args: list) -> tuple:
    numbers = len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not numbers or not args[0] < args[1] and not (kind is Kind.int and args[0] == args[1]):
        raise ConfigError(f"tune.search_space {key}: {kind.value} needs [low, high] with low < high, got {list(args)}")
    if kind is Kind.int and not all(float(a).is_integer() for a in args):
        raise ConfigError(f"tune.search_space {key}: int needs whole-number bounds, got {list(args)}")
    if kind is Kind.loguniform and args[0] <= 0:
        raise ConfigError(f"tune.search_space {key}: loguniform needs low > 0, got {list(args)}")
    return (int(args[0]), int(args[1])) if kind is Kind.int else (float(args[0]), float(args[1]))


def _check_values(d: Distribution, model: ModelConfig, train: TrainConfig) -> None:
    """Every option (or both bounds) builds valid configs, and fits the field's type."""
    typ = _field_type(d.section, d.field, d.key)
    origin = typing.get_origin(typ) or typ
    if d.kind in (Kind.uniform, Kind.loguniform) and typ is not float:
        raise ConfigError(f"tune.search_space {d.key}: {d.kind.value} draws floats but {d.key} is {_name(typ)}; "
                          f"use {'int [low, high]' if typ is int else 'choice [...]'}")
    if d.kind is Kind.int and typ not in (int, float):
        raise ConfigError(f"tune.search_space {d.key}: int draws whole numbers but {d.key} is {_name(typ)}; use choice [...]")
    for v in d.values:
        if origin is list and not isinstance(v, list):
            raise ConfigError(f"tune.search_space {d.key}: option {v!r} must be a list like [128, 64] ({d.key} is {_name(typ)})")
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"tune.search_space {d.key}: option {v!r} must be a whole number ({d.key} is int)")
        if typ is float and (isinstance(v, bool) or not isinstance(v, (int, float))) or isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"tune.search_space {d.key}: option {v!r} must be a finite number ({d.key} is float)")
        try:
            apply({d.key: v}, model, train)
        except ConfigError as e:
            detail = str(e).removeprefix("Bad configuration: ").split(". Run `mlsys run")[0]
            raise ConfigError(f"tune.search_space {d.describe()}: the value {v!r} is invalid ({detail})") from None


def _name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ))
