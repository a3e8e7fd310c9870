"""Model packages: everything needed to score, checksummed, no pickle.

A package is a folder::

    manifest.json        format, model name, created, sha256 of every other file
    model.json           model class name (from a closed table), config, input spec
    model.safetensors    torch weights
    model.onnx           the scoring graph (probabilities), weights embedded
    sparse.safetensors   the sparse half: the embedding table and the lookup plan's arrays (NumPy)
    sparse.json          the lookup plan (mlsys.registry.halves)
    dense.onnx           the dense half: SparseOutput tensors in, probabilities out
    user.onnx, candidates.onnx, user_side.json   (DIN, bst_cached) the user side and the candidate side
    preprocessor.json    the fitted CtrPreprocessor (with the data set's declared feature schema)
    schema.json          the feature schema, request columns and the tensor signature
    tables/users.parquet user attributes and their latest behaviour sequence
    tables/items.parquet item attributes
    statistics.json      the training split's statistics (the baseline of online skew; packages from before it lack it)

:func:`write_package` builds one; :func:`read_package` verifies and loads it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlsys import storage
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ArtifactIntegrityError, ModelNotFoundError
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig

if TYPE_CHECKING:  # writing a package (and torch_model) needs torch; reading and scoring one does not
    import torch

# /4: the sparse (NumPy embedding table) and dense (ONNX) halves beside the fused graph;
# /3: inputs named by the data set's declared feature schema (``multi_hot`` features, not one fixed list column);
# /2: one embedding table for all sparse inputs (``sparse.table.weight``); /1 had a table per input.
FORMAT = "mlsys.model-package/4"
OLDER_FORMATS = {"mlsys.model-package/1": "one embedding table per input",
                 "mlsys.model-package/2": "MovieLens' inputs, not a declared feature schema",
                 "mlsys.model-package/3": "one fused ONNX graph, without the sparse and dense halves"}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelPackage:
    """A verified, loaded package (see the module docstring for the layout)."""

    path: Path
    manifest: dict
    model_config: ModelConfig
    spec: InputSpec
    preprocessor: CtrPreprocessor
    users: pd.DataFrame
    items: pd.DataFrame

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    def training_statistics(self):
        """The training split's :class:`~mlsys.data.statistics.DatasetStatistics`, or None (an older package)."""
        from mlsys.data.statistics import DatasetStatistics

        path = self.path / "statistics.json"
        return DatasetStatistics.from_json(path.read_text()) if path.exists() else None

    def torch_model(self) -> torch.nn.Module:
        from safetensors.torch import load_file

        from mlsys.models.zoo import build_model

        model = build_model(self.spec, self.model_config)
        model.load_state_dict(load_file(self.path / "model.safetensors"))
        return model.eval()


def export_onnx(model: torch.nn.Module, spec: InputSpec, path: Path) -> None:
    """The fused probability graph (the four model inputs in, ``score`` out)."""
    from mlsys.models.zoo import Scorer
    from mlsys.registry.onnx_graphs import example_inputs, export_graph

    export_graph(Scorer(model).eval(), example_inputs(spec), path, list(MODEL_INPUTS))


def write_package(
    directory: Path,
    *,
    model: torch.nn.Module,
    model_config: ModelConfig,
    preprocessor: CtrPreprocessor,
    users: pd.DataFrame,
    items: pd.DataFrame,
    lineage: dict,
    statistics: str | None = None,
) -> Path:
    """Write a package folder and its manifest; returns the folder. ``statistics``: the URI of the
    training split's statistics (JSON), copied in as the baseline online monitoring compares with."""
    from safetensors.torch import save_file

    from mlsys.registry.halves import export_halves
    from mlsys.registry.user_side import export_user_side

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tables").mkdir(exist_ok=True)
    spec = preprocessor.input_spec()
    model = model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors")
    cfg = {**dataclasses.asdict(model_config), "name": str(getattr(model_config.name, "value", model_config.name))}
    (directory / "model.json").write_text(json.dumps({"config": cfg, "spec": spec.to_dict()}, indent=2))
    (directory / "preprocessor.json").write_text(preprocessor.to_json())
    signature = {
        "feature_schema": preprocessor.schema.to_dict(),
        "request_columns": list(preprocessor.request_columns),
        "inputs": {
            "categorical": {"dtype": "int64", "shape": [-1, len(spec.categorical_fields)]},
            "multi_hot": {"dtype": "int64", "shape": [-1, len(spec.multi_hot_fields) * spec.multi_hot_length]},
            "history": {"dtype": "int64", "shape": [-1, spec.history_length]},
            "numeric": {"dtype": "float32", "shape": [-1, len(spec.numeric_fields)]},
        },
        "outputs": {"score": {"dtype": "float32", "shape": [-1]}},
    }
    (directory / "schema.json").write_text(json.dumps(signature, indent=2))
    users.to_parquet(directory / "tables" / "users.parquet", index=False)
    items.to_parquet(directory / "tables" / "items.parquet", index=False)
    if statistics:
        storage.write_text(str(directory / "statistics.json"), storage.read_text(statistics))
    export_onnx(model, spec, directory / "model.onnx")
    export_halves(model, directory)
    export_user_side(model, spec, directory)  # DIN, bst_cached: the user side once per request (nothing for others)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "model": cfg["name"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lineage": lineage,
        "files": {str(p.relative_to(directory)): storage.sha256_file(p) for p in files},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def read_package(uri: str, cache_dir: Path | None = None) -> ModelPackage:
    """Load and verify a package from a local folder or any artifact URI."""
    if cache_dir is None:  # remote packages: one local copy per URI
        import hashlib
        import tempfile

        cache_dir = Path(tempfile.gettempdir()) / "mlsys-packages" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    local = storage.download_dir(uri, cache_dir)
    manifest_path = local / MANIFEST
    if not manifest_path.exists():
        raise ModelNotFoundError(uri, f"no {MANIFEST} in the folder")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") in OLDER_FORMATS:
        raise ModelNotFoundError(uri, f"package format {manifest['format']!r} ({OLDER_FORMATS[manifest['format']]}) was "
                                      f"written by an older mlsys; this one reads {FORMAT!r}: retrain and register the model again")
    if manifest.get("format") != FORMAT:
        raise ModelNotFoundError(uri, f"unknown package format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name, digest in manifest["files"].items():
        path = local / name
        actual = storage.sha256_file(path) if path.exists() else "missing"
        if actual != digest:
            raise ArtifactIntegrityError(str(path), digest, actual)
    meta = json.loads((local / "model.json").read_text())
    return ModelPackage(
        path=local,
        manifest=manifest,
        model_config=ModelConfig(**meta["config"]),
        spec=InputSpec.from_dict(meta["spec"]),
        preprocessor=CtrPreprocessor.from_json((local / "preprocessor.json").read_text()),
        users=pd.read_parquet(local / "tables" / "users.parquet"),
        items=pd.read_parquet(local / "tables" / "items.parquet"),
    )
