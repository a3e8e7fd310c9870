"""DeepCTR-Torch (``pip install deepctr-torch==0.3.0``, the ``bench`` extra) on our arrays.

The same inputs our models get: the categorical fields (one embedding
each), each multi-hot feature and the behaviour sequence as variable-length fields (index 0 =
padding; the sequence shares the item table, as ours does), the numeric
columns as dense features. ``PeerModel.fit`` is DeepCTR-Torch's own training
loop (``BaseModel.fit``), the path a modeler using it would take.
"""

from __future__ import annotations

import numpy as np

from mlsys.models import InputSpec, ModelConfig


def _columns(spec: InputSpec, dim: int, sequence_length: bool):
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat

    sparse = [SparseFeat(f, n, embedding_dim=dim) for f, n in zip(spec.categorical_fields, spec.categorical_sizes)]
    multi_hot = [VarLenSparseFeat(SparseFeat(f, n, embedding_dim=dim), maxlen=spec.multi_hot_length, combiner="mean")
                 for f, n in zip(spec.multi_hot_fields, spec.multi_hot_sizes)]
    history = VarLenSparseFeat(
        SparseFeat(f"hist_{spec.item_field}", spec.item_size, embedding_dim=dim, embedding_name=spec.item_field),
        maxlen=spec.history_length,
        combiner="mean",
        length_name="seq_length" if sequence_length else None,
    )
    dense = [DenseFeat(f, 1) for f in spec.numeric_fields]
    return [*sparse, *multi_hot, history, *dense]


def inputs(spec: InputSpec, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our (categorical, multi_hot, history, numeric) arrays as DeepCTR's feature dict."""
    x = {f: arrays["categorical"][:, i] for i, f in enumerate(spec.categorical_fields)}
    w = spec.multi_hot_length
    x.update({f: arrays["multi_hot"][:, k * w : (k + 1) * w] for k, f in enumerate(spec.multi_hot_fields)})
    x[f"hist_{spec.item_field}"] = arrays["history"]
    x["seq_length"] = (arrays["history"] != 0).sum(1)
    x.update({f: arrays["numeric"][:, i] for i, f in enumerate(spec.numeric_fields)})
    return x


def build(name: str, spec: InputSpec, cfg: ModelConfig, learning_rate: float, seed: int):
    """DeepCTR-Torch's DeepFM or DIN with our widths, dropout, activations and no extra L2."""
    import torch
    from deepctr_torch.models import DIN, DeepFM

    common = dict(dnn_hidden_units=tuple(cfg.mlp_dims), dnn_dropout=cfg.dropout, l2_reg_embedding=0.0, seed=seed, device="cpu")
    if name == "deepfm":
        model = DeepFM(_columns(spec, cfg.embed_dim, False), _columns(spec, cfg.embed_dim, False), l2_reg_linear=0.0, **common)
    elif name == "din":
        model = DIN(_columns(spec, cfg.embed_dim, True), [spec.item_field], att_hidden_size=tuple(cfg.attention_dims),
                    att_activation="relu", **common)
    else:
        raise ValueError(f"no peer model for {name!r}")
    model.compile(torch.optim.Adam(model.parameters(), lr=learning_rate), "binary_crossentropy", metrics=[])
    return model


def initialise_like_deepctr(model) -> None:
    """Re-initialise one of *our* models the way DeepCTR-Torch 0.3.0 initialises its own.

    DeepCTR-Torch draws every embedding (and first-order weight) from N(0, init_std=1e-4)
    and every hidden layer's weight of its DNNs (the deep tower and DIN's activation
    unit) from N(0, 1e-4); output layers and biases keep torch's default. Ours: N(0, 0.01)
    embeddings, zero first-order weights, torch's default (Kaiming uniform) layers.
    """
    import torch

    from mlsys.models.blocks import MLP

    with torch.no_grad():
        model.sparse.table.weight.normal_(std=1e-4)
        for module in model.modules():
            if isinstance(module, MLP):
                hidden = [layer for layer in module if isinstance(layer, torch.nn.Linear)][:-1]
                for layer in hidden:
                    layer.weight.normal_(std=1e-4)


def fit(model, x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, epochs: int = 1) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # "Train on N samples ..." every call
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)


def predict(model, x: dict[str, np.ndarray]) -> np.ndarray:
    return model.predict(x, batch_size=4096).reshape(-1)
