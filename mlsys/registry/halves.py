"""A model package's two halves: the sparse part as NumPy, the dense part as ONNX.

Every zoo model is ``dense(sparse(categorical, multi_hot, history, numeric))``
(:mod:`mlsys.models.blocks`). A package carries, beside the fused ``model.onnx``:

    sparse.safetensors   the one embedding table (rows, D [+ 1 first-order column]) and the lookup plan's arrays
    sparse.json          the lookup plan: widths, shapes, which SparseOutput tensors the dense part reads
    dense.onnx           the dense part: those SparseOutput tensors in, click probabilities out

:class:`SparseLookup` is the sparse forward in NumPy (one gather, no torch), for
CPU replicas that hold the table; :class:`DenseScorer` runs ``dense.onnx``. Scored
through both, a batch gets the fused model's probabilities (within float rounding;
``tests/unit/test_halves.py`` checks every model of the zoo to 1e-5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlsys.errors import InvalidRequestError
from mlsys.registry.onnx_graphs import example_inputs, export_graph, onnx_session

SPARSE_TABLE = "sparse.safetensors"
SPARSE_PLAN = "sparse.json"
DENSE_ONNX = "dense.onnx"
DENSE_INPUT_PREFIX = "sparse_"  # dense.onnx's inputs: sparse_fields, ... (bare `linear` clashes with a node name)
# SparseOutput's tensors, in the order dense.onnx takes those a model reads.
SPARSE_OUTPUTS = ("numeric", "fields", "multi_hot", "history", "history_mask", "history_pooled", "target", "linear")


@dataclass(frozen=True)
class SparsePlan:
    """How :class:`SparseLookup` reproduces ``SparseEmbeddings.forward`` (see its docstring)."""

    dim: int  # embedding columns (0: first-order only, as LR)
    first_order: bool  # one more column: per-value weights summed into `linear`
    sequence: bool  # the history as a (B, L, D) sequence and mask, not its mean
    widths: tuple[int, int, int]  # id columns: categorical F, multi-hot K * W, history L
    multi_hot_shape: tuple[int, int]  # (K, W)
    item_index: int  # the item's position among the categorical fields
    outputs: tuple[str, ...]  # the SparseOutput tensors dense.onnx takes, in SPARSE_OUTPUTS order

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SparsePlan":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class SparseLookup:
    """``SparseLookup.load(package_dir)(categorical, multi_hot, history, numeric) -> {name: array}``:
    the SparseOutput tensors the dense part reads, as NumPy arrays (float32; ``history_mask`` bool).
    """

    def __init__(self, table: np.ndarray, offsets: np.ndarray, limits: np.ndarray, plan: SparsePlan):
        self.table, self.offsets, self.limits, self.plan = table, offsets, limits, plan

    @classmethod
    def load(cls, directory: Path) -> "SparseLookup":
        from safetensors.numpy import load_file

        arrays = load_file(str(Path(directory) / SPARSE_TABLE))
        plan = SparsePlan.from_dict(json.loads((Path(directory) / SPARSE_PLAN).read_text()))
        return cls(arrays["table"], arrays["offsets"], arrays["limits"], plan)

    def __call__(self, categorical: np.ndarray, multi_hot: np.ndarray, history: np.ndarray, numeric: np.ndarray) -> dict[str, np.ndarray]:
        p = self.plan
        ids = np.concatenate([categorical, multi_hot, history], axis=1)  # (B, F + K W + L)
        if ((ids < 0) | (ids >= self.limits)).any():
            raise InvalidRequestError("an input id is outside its vocabulary: encode inputs with the model's own preprocessor")
        real = ids != 0
        e = self.table[np.where(real, ids + self.offsets, 0)]  # (B, T, D + first order)
        e *= real[..., None]  # padding contributes zeros, whatever row 0 holds
        f, kw, _ = p.widths
        fields, hot_rows, history_rows = e[:, :f], e[:, f : f + kw], e[:, f + kw :]
        (k, w), b, width = p.multi_hot_shape, e.shape[0], e.shape[-1]
        if k:
            hot_mean = _mean_over_real(hot_rows.reshape(b * k, w, width), multi_hot.reshape(b * k, w)).reshape(b, k, width)
        else:
            hot_mean = np.zeros((b, 0, width), dtype=e.dtype)
        history_mean = None if p.sequence else _mean_over_real(history_rows, history)
        d = p.dim
        out: dict[str, np.ndarray] = {"numeric": np.ascontiguousarray(numeric, dtype=np.float32)}
        if d:
            out["fields"] = fields[..., :d]
            out["target"] = fields[:, p.item_index, :d]
            out["multi_hot"] = hot_mean[..., :d]
            if p.sequence:
                out["history"] = history_rows[..., :d]
                out["history_mask"] = history != 0
            else:
                out["history_pooled"] = history_mean[:, :d]
        if p.first_order:
            out["linear"] = fields[..., d:].sum(1) + hot_mean[..., d:].sum(1) + history_mean[:, d:]
        return {name: np.ascontiguousarray(out[name]) for name in p.outputs}


def _mean_over_real(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(B, K, W) rows (zeros at padding), (B, K) ids -> (B, W): the mean over ids != 0, zeros if none."""
    return rows.sum(1) / np.maximum((ids != 0).sum(1, keepdims=True), 1).astype(rows.dtype)


class DenseScorer:
    """``DenseScorer(package_dir).score({name: array}) -> probabilities``: ``dense.onnx`` on ONNX Runtime.

    ``providers``: ONNX Runtime execution providers, best first (CUDA or TensorRT on a GPU replica).
    """

    def __init__(self, directory: Path, threads: int = 1, providers: list[str] | None = None):
        self.session = onnx_session(Path(directory) / DENSE_ONNX, threads, providers)
        self.inputs = tuple(i.name.removeprefix(DENSE_INPUT_PREFIX) for i in self.session.get_inputs())

    def score(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["score"], {DENSE_INPUT_PREFIX + name: tensors[name] for name in self.inputs})[0]


def export_halves(model, directory: Path) -> list[str]:
    """Write the sparse table and plan and ``dense.onnx`` of a zoo model into a package folder; returns their names."""
    import torch
    from safetensors.numpy import save_file

    from mlsys.models.blocks import SparseOutput

    sparse = model.sparse
    with torch.no_grad():
        out = sparse(*example_inputs(sparse.spec))
    outputs = tuple(name for name in SPARSE_OUTPUTS if getattr(out, name) is not None)
    plan = SparsePlan(sparse.dim, sparse.first_order, sparse.sequence, tuple(sparse.widths), tuple(sparse.multi_hot_shape),
                      sparse.item_index, outputs)
    save_file({"table": sparse.table.weight.detach().cpu().numpy().astype(np.float32),
               "offsets": sparse.offsets.cpu().numpy(), "limits": sparse.limits.cpu().numpy()},
              str(directory / SPARSE_TABLE))
    (directory / SPARSE_PLAN).write_text(json.dumps(plan.to_dict(), indent=2))

    class Dense(torch.nn.Module):  # the dense part on named SparseOutput tensors -> probabilities
        def __init__(self):
            super().__init__()
            self.dense = model.dense

        def forward(self, *tensors):
            return torch.sigmoid(self.dense(SparseOutput(**dict(zip(outputs, tensors)))))

    export_graph(Dense().eval(), tuple(getattr(out, n) for n in outputs), directory / DENSE_ONNX,
                 [DENSE_INPUT_PREFIX + n for n in outputs], varargs=True)
    return [SPARSE_TABLE, SPARSE_PLAN, DENSE_ONNX]
