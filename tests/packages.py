"""Broken variants of a real model package, for the release and gate tests: ``variant(source, dst, kind)``
copies the package at ``source`` to ``dst`` and breaks it: ``corrupt`` (a byte of ``model.onnx``
changed, the manifest's digest kept: fails its checksum), ``constant`` (a valid package whose model
answers 0.5 for every row) or ``raising`` (a valid package whose model fails at run time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlsys.storage import sha256_file


def _broken_onnx(path: Path, raising: bool) -> None:
    """A model.onnx with the package's inputs that answers 0.5 for every row, or raises on every call."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    inputs = [helper.make_tensor_value_info(n, T.FLOAT if n == "numeric" else T.INT64, ["N", None])
              for n in ("categorical", "multi_hot", "history", "numeric")]
    nodes = [helper.make_node("Shape", ["categorical"], ["rows"], start=0, end=1)]
    if raising:  # an index far out of bounds: ONNX Runtime fails at run time, never at load
        nodes += [helper.make_node("Constant", [], ["far"], value=helper.make_tensor("far", T.INT64, [1], [1_000_000])),
                  helper.make_node("Gather", ["categorical", "far"], ["picked"], axis=1),
                  helper.make_node("ReduceSum", ["picked"], ["summed"], keepdims=0),
                  helper.make_node("Cast", ["summed"], ["score"], to=T.FLOAT)]
    else:
        nodes += [helper.make_node("ConstantOfShape", ["rows"], ["score"], value=helper.make_tensor("v", T.FLOAT, [1], [0.5]))]
    model = helper.make_model(helper.make_graph(nodes, "broken", inputs, [helper.make_tensor_value_info("score", T.FLOAT, ["N"])]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def variant(source: str, dst: Path, kind: str) -> str:
    shutil.copytree(source, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    if kind == "corrupt":  # the manifest keeps the old digest: the package fails its checksum
        with open(dst / "model.onnx", "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 16)
        return str(dst)
    _broken_onnx(dst / "model.onnx", raising=kind == "raising")
    manifest["files"]["model.onnx"] = sha256_file(dst / "model.onnx")  # a valid package of a broken model
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return str(dst)
