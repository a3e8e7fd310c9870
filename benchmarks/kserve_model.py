"""The baseline of ``benchmarks/serving.py --case v2``: KServe's Python ``ModelServer`` serving the
package's ``model.onnx`` over the v2 (Open Inference) protocol, doing the same work as our infer route.

Runs in its own environment (KServe's pins are not ours), with the repository on ``PYTHONPATH``:

    python3 -m venv /tmp/kserve-venv
    /tmp/kserve-venv/bin/pip install kserve==0.21.0 onnxruntime==1.32.0 torch==2.13.0 "ray[data]==2.60.0" \\
        pyarrow==25.0.1 pandas==2.3.3 safetensors "datasketches>=5.2,<6" pyyaml
    PYTHONPATH=. /tmp/kserve-venv/bin/python benchmarks/kserve_model.py --package PATH --port 8102

The model takes ``user_id`` and ``item_id`` (INT64, [N]) and returns ``score`` (FP32, [N]), as
ours does. Its ``predict`` groups the rows by user and encodes each group with mlsys'
``RankingModel.encode`` (the package's tables, encoded once by its fitted preprocessor: the
same features and lookup as our route), then runs the package's ``model.onnx`` once on all rows
in ONNX Runtime (the same session options: 1 intra-op thread, every graph optimization).
KServe as shipped otherwise (one uvicorn worker, no batching, its latency logging on); gRPC off.
"""

from __future__ import annotations

import argparse

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class RankerModel(Model):
    def __init__(self, name: str, package: str):
        super().__init__(name)
        self.package_path = package
        self.load()

    def load(self) -> bool:
        from mlsys.registry.package import read_package
        from mlsys.serve.ranker import RankingModel

        self.ranker = RankingModel(read_package(self.package_path), engine="onnx")
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        tensors = {t.name: t.as_numpy() for t in payload.inputs}
        users, items = tensors["user_id"].astype(np.int64).reshape(-1), tensors["item_id"].astype(np.int64).reshape(-1)
        groups = [(u, np.flatnonzero(users == u)) for u in dict.fromkeys(users.tolist())]
        encoded = [self.ranker.encode(u, items[rows]) for u, rows in groups]
        inputs = {k: np.concatenate([e.inputs[k] for e in encoded]) for k in encoded[0].inputs} if len(encoded) > 1 else encoded[0].inputs
        scores = self.ranker.scorer.score_inputs(inputs)
        out = np.empty(len(users), dtype=np.float32)
        out[np.concatenate([rows for _, rows in groups])] = scores
        output = InferOutput(name="score", shape=[len(out)], datatype="FP32", data=out.tolist())
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--name", default="ctr")
    args = parser.parse_args()
    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([RankerModel(args.name, args.package)])


if __name__ == "__main__":
    main()
