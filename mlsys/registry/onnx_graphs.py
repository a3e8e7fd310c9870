"""ONNX graphs of a model package: one exporter call and one session factory for all of them
(the fused ``model.onnx``, ``dense.onnx``, the user-side graphs)."""

from __future__ import annotations

from pathlib import Path


def example_inputs(spec, batch: int = 2) -> tuple:
    """Model inputs of the right dtypes and widths for ``spec`` (an :class:`~mlsys.models.InputSpec`), for tracing."""
    import torch

    return (
        torch.ones(batch, len(spec.categorical_fields), dtype=torch.int64),
        torch.ones(batch, len(spec.multi_hot_fields) * spec.multi_hot_length, dtype=torch.int64),
        torch.ones(batch, spec.history_length, dtype=torch.int64),
        torch.zeros(batch, len(spec.numeric_fields), dtype=torch.float32),
    )


def export_graph(module, args: tuple, path: Path, input_names: list[str], output_names: tuple[str, ...] = ("score",),
                 varargs: bool = False) -> None:
    """``module(*args)`` to ONNX at ``path``: every input's first axis a dynamic batch, weights in the one file.

    ``varargs``: ``module.forward`` takes ``*tensors`` (torch.export sees them as one tuple argument)."""
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" x4
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=list(output_names),
                          dynamic_shapes=(shapes,) if varargs else shapes, external_data=False, dynamo=True, verbose=False)


def onnx_session(path: Path, threads: int = 1, providers: list[str] | None = None):
    """An ONNX Runtime session with every graph optimization on (constant folding, Gemm/MatMul+Add fusion,
    layer-norm and GELU fusions); ``providers`` best first, those this onnxruntime lacks skipped, CPU always last."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    have = set(ort.get_available_providers())
    chosen = [p for p in (providers or []) if p in have and p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=chosen)
