"""The model zoo: plain torch modules, no Ray. Pick one with ``model=<name>``.

This package imports only the configuration (plain Python), so that what scores a package's
ONNX graphs (a Serve replica, a ``mlsys predict`` actor) never pays torch's ~1.2 s import.
The torch side is imported by name: :mod:`mlsys.models.zoo` (``MODELS``, ``build_model``,
``Scorer``) and :mod:`mlsys.models.blocks` (``CtrModel``, ``SparseOutput``, ...). Plain imports,
not a lazy ``__getattr__``: the pipeline's fingerprint reads imports statically, and it must
see that the train step reaches every model's code.
"""

from mlsys.models.config import MODEL_INPUTS, InputSpec, ModelConfig, ModelName, UserFields

__all__ = ["MODEL_INPUTS", "InputSpec", "ModelConfig", "ModelName", "UserFields"]
