"""Model packages: everything needed to score, checksummed, no pickle.

A package is a folder::

    manifest.json        format, model name, created, sha256 of every other file
    model.json           model class name (from a closed table), config, input spec
    model.safetensors    torch weights
    model.onnx           the scoring graph (probabilities), weights embedded
    preprocessor.json    the fitted CtrPreprocessor (with the data set's declared feature schema)
    schema.json          the feature schema, request columns and the tensor signature
    tables/users.parquet user attributes and their latest behaviour sequence
    tables/items.parquet item attributes

:func:`write_package` builds one; :func:`read_package` verifies and loads it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from mlsys import storage
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ArtifactIntegrityError, ModelNotFoundError
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, Scorer, build_model

# /3: inputs named by the data set's declared feature schema (``multi_hot`` features, not one fixed list column);
# /2: one embedding table for all sparse inputs (``sparse.table.weight``); /1 had a table per input.
FORMAT = "mlsys.model-package/3"
OLDER_FORMATS = {"mlsys.model-package/1": "one embedding table per input",
                 "mlsys.model-package/2": "MovieLens' inputs, not a declared feature schema"}
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

    def torch_model(self) -> torch.nn.Module:
        model = build_model(self.spec, self.model_config)
        model.load_state_dict(load_file(self.path / "model.safetensors"))
        return model.eval()


def _example_inputs(spec: InputSpec, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return (
        torch.ones(batch, len(spec.categorical_fields), dtype=torch.int64),
        torch.ones(batch, len(spec.multi_hot_fields) * spec.multi_hot_length, dtype=torch.int64),
        torch.ones(batch, spec.history_length, dtype=torch.int64),
        torch.zeros(batch, len(spec.numeric_fields), dtype=torch.float32),
    )


def export_onnx(model: torch.nn.Module, spec: InputSpec, path: Path) -> None:
    """Export the probability graph with a dynamic batch axis, weights in the one file."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" x4
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export(model, spec, path, batch)


def _export(model: torch.nn.Module, spec: InputSpec, path: Path, batch) -> None:
    torch.onnx.export(
        Scorer(model).eval(),
        _example_inputs(spec),
        str(path),
        input_names=list(MODEL_INPUTS),
        output_names=["score"],
        dynamic_shapes={name: {0: batch} for name in MODEL_INPUTS},
        external_data=False,
        dynamo=True,
        verbose=False,
    )


def write_package(
    directory: Path,
    *,
    model: torch.nn.Module,
    model_config: ModelConfig,
    preprocessor: CtrPreprocessor,
    users: pd.DataFrame,
    items: pd.DataFrame,
    lineage: dict,
) -> Path:
    """Write a package folder and its manifest; returns the folder."""
    from safetensors.torch import save_file

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
    export_onnx(model, spec, directory / "model.onnx")
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
