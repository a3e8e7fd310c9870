"""Hydra composition: the one place config becomes typed objects.

The schema below is registered in Hydra's ConfigStore, so a misspelt key or
a value of the wrong type fails at compose time with a message naming it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore

from mlsys.data.config import DataConfig
from mlsys.data.validation import ValidationConfig
from mlsys.errors import ConfigError
from mlsys.evaluate.config import EvaluateConfig
from mlsys.features.config import FeaturesConfig
from mlsys.models.config import ModelConfig
from mlsys.monitor.config import MonitorConfig
from mlsys.config import ClusterConfig, HomeConfig, UiConfig
from mlsys.pipeline.config import PipelineConfig
from mlsys.registry.config import RegistryConfig
from mlsys.serve.config import ServeConfig
from mlsys.serve.predict_config import PredictConfig
from mlsys.train.config import TrainConfig
from mlsys.train.loggers import LoggerConfig
from mlsys.tune.config import TuneConfig


@dataclass
class MlsysConfig:
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    home: HomeConfig = field(default_factory=HomeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    ui: UiConfig = field(default_factory=UiConfig)


# Maps keyed by names the user picks (step names, custom Ray resources): open to new keys, so
# `pipeline.resources.train={num_cpus: 1}` and `train.resources_per_worker.worker=1` need no `+`.
# Their values are checked by the dataclass that holds them (a key not naming a step is refused).
OPEN_MAPS = ("pipeline.resources", "train.resources_per_worker",
             "serve.ingress.resources", "serve.embedding.resources", "serve.dense.resources")


def _schema():
    from omegaconf import OmegaConf

    node = OmegaConf.structured(MlsysConfig)
    for key in OPEN_MAPS:
        OmegaConf.set_struct(OmegaConf.select(node, key), False)
    return node


ConfigStore.instance().store(name="mlsys_schema", node=_schema())


def config_dir() -> Path:
    """``$MLSYS_CONFIG_DIR``, else ``./configs``, else the configs beside the package."""
    for candidate in (os.environ.get("MLSYS_CONFIG_DIR"), "configs", Path(__file__).resolve().parents[2] / "configs"):
        if candidate and (Path(candidate) / "config.yaml").exists():
            return Path(candidate).resolve()
    raise ConfigError("no configs/config.yaml found; run from the project folder or set MLSYS_CONFIG_DIR")


_NOISE = ("full_key", "object_type", "reference_type", "To append", "Config search path", "provider=", "See https")


def _one_line(e: BaseException) -> str:
    """Hydra's message and its causes' (which name the key and type), minus noise."""
    parts: list[str] = []
    while e is not None:
        for line in str(e).splitlines():
            line = line.strip().rstrip(".")
            if line and not line.startswith(_NOISE) and "$VALUE" not in line and line not in parts:
                parts.append(line)
        e = e.__cause__ or e.__context__
    return "; ".join(parts).replace(":;", ":")


def _own_error(e: BaseException | None) -> ConfigError | None:
    """A config dataclass's own check (``mlsys.config.require``), under OmegaConf's wrapping."""
    while e is not None and not isinstance(e, ConfigError):
        e = e.__cause__ or e.__context__
    return e


def compose_raw(overrides: list[str] | None = None):
    """The composed ``DictConfig`` (for printing with ``--cfg job``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose("config", overrides=list(overrides or []))
    except Exception as e:  # Hydra/OmegaConf raise several unrelated types
        raise ConfigError(_one_line(e)) from None


def compose_config(overrides: list[str] | None = None) -> MlsysConfig:
    """``compose_config(["model.embed_dim=32"]).model.embed_dim == 32``."""
    from omegaconf import OmegaConf

    raw = compose_raw(overrides)
    tree = OmegaConf.to_container(raw, resolve=False)  # before to_object, which drops extra keys
    try:
        cfg = OmegaConf.to_object(raw)
    except Exception as e:
        raise _own_error(e) or ConfigError(_one_line(e)) from None
    _reject_unknown_keys(tree, cfg, "")
    return cfg


def _reject_unknown_keys(raw: dict, obj, prefix: str) -> None:
    """`+model.embed_dimm=3` composes (``+`` adds keys), then would be silently dropped."""
    fields = {f.name for f in dataclasses.fields(obj)}  # not hasattr: to_object sets extra keys as attributes
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{prefix}{key}' (a typo, or a `+` override of a key the schema lacks)")
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(obj, key)):
            _reject_unknown_keys(value, getattr(obj, key), f"{prefix}{key}.")
