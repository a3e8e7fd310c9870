"""The model zoo: plain torch modules, no Ray. Pick one with ``model=<name>``.

The configuration names (:class:`ModelConfig`, :class:`InputSpec`, :data:`MODEL_INPUTS`, ...) are
plain Python and import at once; the torch ones (:data:`MODELS`, :func:`build_model`, the
modules) import torch on first use (PEP 562), so what only scores a package's ONNX graphs (a
Serve replica, a ``mlsys predict`` actor) never pays torch's ~1.2 s import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from mlsys.models.config import MODEL_INPUTS, InputSpec, ModelConfig, ModelName, UserFields

if TYPE_CHECKING:
    from mlsys.models.blocks import CtrModel, SparseEmbeddings, SparseOutput, UserSide
    from mlsys.models.zoo import MODELS, Scorer, build_model

_LAZY = {
    "CtrModel": "mlsys.models.blocks", "SparseEmbeddings": "mlsys.models.blocks",
    "SparseOutput": "mlsys.models.blocks", "UserSide": "mlsys.models.blocks",
    "MODELS": "mlsys.models.zoo", "Scorer": "mlsys.models.zoo", "build_model": "mlsys.models.zoo",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MODELS", "MODEL_INPUTS", "CtrModel", "InputSpec", "ModelConfig", "ModelName", "Scorer",
    "SparseEmbeddings", "SparseOutput", "UserFields", "UserSide", "build_model",
]
