"""The KServe v2 / Open Inference Protocol over REST, as plain Python (no Ray, no FastAPI).

The model is the registered model's name (``ctr``). It takes one row per
(user, candidate) pair: ``user_id`` and ``item_id`` (INT64, shape [N]), and
optionally the model's context features (BYTES for categorical and multi-hot
ones, a multi-hot row's values joined by ``|``; FP32 for numeric ones), and
returns ``score`` (FP32, shape [N]). Tensors come as JSON (``data``, flat or
nested row-major) or in Triton's binary tensor extension (``binary_data_size``
with the ``Inference-Header-Content-Length`` header), so ``tritonclient[http]``
works with either setting. Every malformed request is a :class:`V2Error` whose
message names the tensor or field; the app answers it as ``{"error": ...}``
with status 400 (the protocol's error body).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsys.data.feature_schema import FeatureSchema, Kind
from mlsys.errors import InvalidRequestError

# The protocol's tensor datatypes and their NumPy types (BYTES: Python objects).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
HEADER = "Inference-Header-Content-Length"
USER, ITEM, SCORE = "user_id", "item_id", "score"
VALUES_SEPARATOR = "|"  # a multi-hot context row in one BYTES element


class V2Error(InvalidRequestError):
    """A request the protocol refuses (400, ``{"error": message}``)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """The model's v2 inputs and outputs, derived from its feature schema."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = (TensorSpec(SCORE, "FP32"),)
    required: tuple[str, ...] = (USER, ITEM)

    @classmethod
    def of(cls, schema: FeatureSchema) -> "Signature":
        context = tuple(TensorSpec(name, "FP32" if schema.kind(name) is Kind.numeric else "BYTES") for name in schema.context)
        return cls((TensorSpec(USER, "INT64"), TensorSpec(ITEM, "INT64"), *context))


def model_metadata(name: str, versions: list[str], signature: Signature) -> dict:
    return {"name": name, "versions": versions, "platform": "onnxruntime_onnx",
            "inputs": [t.as_dict() for t in signature.inputs], "outputs": [t.as_dict() for t in signature.outputs]}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]  # by name, each of shape (N,)
    binary_outputs: dict[str, bool]  # the outputs asked for -> send as binary


def parse_infer(body: bytes, header_length: str | None, signature: Signature, max_rows: int) -> InferRequest:
    """An infer request's tensors, checked against ``signature``: every field is named in the error."""
    json_part, binary = _split_body(body, header_length)
    try:
        doc = json.loads(json_part)
    except (ValueError, UnicodeDecodeError) as e:
        raise V2Error(f"the request body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise V2Error("the request body must be a JSON object with `inputs`")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(f"`id` must be a string, got {request_id!r}")
    params = _object(doc.get("parameters"), "parameters")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("`inputs` must be a non-empty list of tensors")
    specs = {t.name: t for t in signature.inputs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict):
            raise V2Error(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if name not in specs:
            raise V2Error(f"inputs[{i}].name is {name!r}; this model's inputs are {[t.name for t in signature.inputs]}")
        if name in inputs:
            raise V2Error(f"input {name!r} is given twice")
        array, offset = _tensor(tensor, specs[name], binary, offset)
        inputs[name] = array
    if offset != len(binary):
        raise V2Error(f"the binary part has {len(binary) - offset} bytes that no input's binary_data_size claims")
    missing = [n for n in signature.required if n not in inputs]
    if missing:
        raise V2Error(f"input {missing[0]!r} is missing; this model needs {list(signature.required)}")
    sizes = {name: len(a) for name, a in inputs.items()}
    if len(set(sizes.values())) > 1:
        raise V2Error(f"every input needs the same number of rows (one per user, item pair); got {sizes}")
    n = next(iter(sizes.values()))
    if n == 0 or n > max_rows:
        raise V2Error(f"inputs have {n} rows; send 1 to {max_rows} (user, item) pairs per request (serve.max_rows)")
    return InferRequest(request_id, inputs, _outputs(doc.get("outputs"), signature, bool(params.get("binary_data_output"))))


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise V2Error(f"the {HEADER} header must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise V2Error(f"the {HEADER} header says {n} bytes of JSON, but the body has {len(body)}")
    return body[:n], body[n:]


def _object(value, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"`{field}` must be an object, got {value!r}")
    return value


def _tensor(tensor: dict, spec: TensorSpec, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    name = spec.name
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != spec.datatype:
        raise V2Error(f"input {name!r} has datatype {datatype!r}; this model takes {spec.datatype} with shape [N]")
    if (not isinstance(shape, list) or len(shape) != 1 or isinstance(shape[0], bool)
            or not isinstance(shape[0], int) or shape[0] < 0):
        raise V2Error(f"input {name!r} has shape {shape!r}; this model takes shape [N] (one value per user, item pair)")
    n = shape[0]
    params = _object(tensor.get("parameters"), f"input {name!r} parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise V2Error(f"input {name!r} has both `data` and a binary_data_size; send one")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise V2Error(f"input {name!r} has binary_data_size {size!r}, past the {len(binary)} bytes of binary data")
        return _from_binary(name, spec.datatype, binary[offset : offset + size], n), offset + size
    if "data" not in tensor:
        raise V2Error(f"input {name!r} has no `data`")
    return _from_json(name, spec.datatype, tensor["data"], n), offset


def _from_json(name: str, datatype: str, data, n: int) -> np.ndarray:
    flat = _flatten(data, name)
    if len(flat) != n:
        raise V2Error(f"input {name!r} has {len(flat)} values but its shape says [{n}]")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise V2Error(f"input {name!r} is BYTES: send its values as JSON strings")
        return np.array(flat, dtype=object)
    if datatype == "INT64":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            bad = next(v for v in flat if not isinstance(v, int) or isinstance(v, bool))
            raise V2Error(f"input {name!r} is INT64 but holds {bad!r}")
        if any(not -(2**63) <= v < 2**63 for v in flat):
            raise V2Error(f"input {name!r} holds a value outside INT64's range")
        return np.array(flat, dtype=np.int64)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise V2Error(f"input {name!r} is {datatype} but holds a value that is not a number")
    out = np.array(flat, dtype=DATATYPES[datatype])
    if not np.isfinite(out).all():
        raise V2Error(f"input {name!r} holds NaN or an infinite value; send finite numbers")
    return out


def _flatten(data, name: str) -> list:
    if not isinstance(data, list):
        raise V2Error(f"input {name!r}: `data` must be a list")
    out: list = []
    stack = [data]
    while stack:  # row-major, nested lists allowed
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _from_binary(name: str, datatype: str, raw: bytes, n: int) -> np.ndarray:
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
        values, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise V2Error(f"input {name!r}: truncated BYTES element")
            (size,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + size > len(raw):
                raise V2Error(f"input {name!r}: truncated BYTES element")
            try:
                values.append(raw[pos + 4 : pos + 4 + size].decode())
            except UnicodeDecodeError:
                raise V2Error(f"input {name!r}: a BYTES element is not UTF-8") from None
            pos += 4 + size
        out = np.array(values, dtype=object)
    else:
        item = np.dtype(DATATYPES[datatype]).itemsize
        if len(raw) != n * item:
            raise V2Error(f"input {name!r} has {len(raw)} bytes of binary data; shape [{n}] of {datatype} needs {n * item}")
        out = np.frombuffer(raw, dtype=np.dtype(DATATYPES[datatype]).newbyteorder("<")).astype(DATATYPES[datatype])
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise V2Error(f"input {name!r} holds NaN or an infinite value; send finite numbers")
    if len(out) != n:
        raise V2Error(f"input {name!r} has {len(out)} values but its shape says [{n}]")
    return out


def _outputs(raw, signature: Signature, binary_default: bool) -> dict[str, bool]:
    names = [t.name for t in signature.outputs]
    if raw is None:
        return {name: binary_default for name in names}
    if not isinstance(raw, list):
        raise V2Error("`outputs` must be a list of {name, parameters}")
    out = {}
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or o.get("name") not in names:
            raise V2Error(f"outputs[{i}] asks for {o.get('name') if isinstance(o, dict) else o!r}; this model's outputs are {names}")
        out[o["name"]] = bool(_object(o.get("parameters"), f"outputs[{i}].parameters").get("binary_data", binary_default))
    return out


def infer_response(model: str, version: str | None, request: InferRequest, scores: np.ndarray) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length (the header's value)."""
    outputs, binary = [], []
    for name, as_binary in request.binary_outputs.items():
        values = np.ascontiguousarray(scores, dtype="<f4")
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": [len(values)]}
        if as_binary:
            tensor["parameters"] = {"binary_data_size": values.nbytes}
            binary.append(values.tobytes())
        else:
            tensor["data"] = values.tolist()
        outputs.append(tensor)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc).encode()
    return (head + b"".join(binary), len(head)) if binary else (head, None)


@dataclass(frozen=True)
class RowGroup:
    """Rows of one infer request that share a user and a context: one ranking request."""

    user_id: int
    rows: np.ndarray  # their positions in the request
    context: dict


def row_groups(request: InferRequest, schema: FeatureSchema) -> list[RowGroup]:
    """The request's (user, item[, context]) rows grouped by user and context, in first-seen order."""
    names = [n for n in schema.context if n in request.inputs]
    keys = zip(request.inputs[USER].tolist(), *(request.inputs[n].tolist() for n in names))
    groups: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return [RowGroup(int(key[0]), np.asarray(rows), {n: _context_value(schema, n, v) for n, v in zip(names, key[1:])})
            for key, rows in groups.items()]


def scatter(groups: list[RowGroup], scores: list[np.ndarray], n: int) -> np.ndarray:
    """Each group's scores back at its rows' positions."""
    out = np.empty(n, dtype=np.float32)
    for group, s in zip(groups, scores):
        out[group.rows] = s
    return out


def _context_value(schema: FeatureSchema, name: str, value):
    if schema.kind(name) is Kind.multi_hot:
        return [v for v in str(value).split(VALUES_SEPARATOR) if v] if value else []
    return value
