"""mlsys: a Ray-native machine-learning system.

>>> import mlsys
>>> result = mlsys.run_pipeline(overrides=["train.max_epochs=1"])   # doctest: +SKIP
>>> mlsys.load_model("models:/ctr@champion").rank(1, [50, 172, 181])  # doctest: +SKIP

Names are imported lazily so ``mlsys --help`` starts fast.
"""

from mlsys._version import __version__
__all__ = ["explain_pipeline", "load_model", "run_pipeline", "__version__"]


def __getattr__(name: str):
    if name in ("explain_pipeline", "load_model", "run_pipeline"):
        from mlsys import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlsys' has no attribute {name!r}")
