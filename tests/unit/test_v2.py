"""mlsys.serve.v2: the KServe v2 / Open Inference Protocol's bodies, checked against the stock tritonclient's
own request and response code (no server: ``InferenceServerClient.generate_request_body`` / ``parse_response_body``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
from mlsys.serve.v2 import HEADER, Signature, V2Error, infer_response, model_metadata, parse_infer, row_groups, scatter
from tests.schemas import movielens_like

SCHEMA = FeatureSchema(
    features=(*movielens_like().features, Feature("device", Kind.categorical, Table.events),
              Feature("price", Kind.numeric, Table.events), Feature("tags", Kind.multi_hot, Table.events)),
    sources={"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "rating": "rating"},
    history_length=5, multi_hot_length=2,
)
SIG = Signature.of(SCHEMA)


def _triton(users, items, binary: bool, outputs_binary: bool | None = True, **context):
    inputs = []
    for name, values, datatype in (("user_id", users, "INT64"), ("item_id", items, "INT64"),
                                   *((n, v, "FP32" if n == "price" else "BYTES") for n, v in context.items())):
        array = np.asarray(values, dtype=np.float32 if datatype == "FP32" else np.int64 if datatype == "INT64" else object)
        t = InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array, binary_data=binary)
        inputs.append(t)
    outputs = None if outputs_binary is None else [InferRequestedOutput("score", binary_data=outputs_binary)]
    body, header_length = InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="r1")
    return body, None if header_length is None else str(header_length)


def test_the_signature_names_the_ids_and_the_context_features():
    meta = model_metadata("ctr", ["3"], SIG)
    assert meta["inputs"][:2] == [{"name": "user_id", "datatype": "INT64", "shape": [-1]},
                                  {"name": "item_id", "datatype": "INT64", "shape": [-1]}]
    assert {t["name"]: t["datatype"] for t in meta["inputs"][2:]} == {"device": "BYTES", "price": "FP32", "tags": "BYTES"}
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_tritonclient_request_parses(binary):
    body, header = _triton([1, 1, 2], [10, 11, 12], binary, device=["ios", "ios", "web"], price=[1.5, 1.5, 2.0],
                           tags=["a|b", "a|b", ""])
    request = parse_infer(body, header, SIG, max_rows=100)
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs["user_id"], [1, 1, 2])
    np.testing.assert_array_equal(request.inputs["item_id"], [10, 11, 12])
    assert list(request.inputs["device"]) == ["ios", "ios", "web"]
    np.testing.assert_allclose(request.inputs["price"], [1.5, 1.5, 2.0])
    groups = row_groups(request, SCHEMA)
    assert [(g.user_id, g.rows.tolist()) for g in groups] == [(1, [0, 1]), (2, [2])]
    assert groups[0].context == {"device": "ios", "price": 1.5, "tags": ["a", "b"]} and groups[1].context["tags"] == []


@pytest.mark.parametrize("as_binary", [False, True, None], ids=["json", "binary", "default"])
def test_the_response_reads_back_in_tritonclient(as_binary):
    body, header = _triton([1, 2], [3, 4], binary=False, outputs_binary=as_binary)
    request = parse_infer(body, header, SIG, max_rows=10)
    content, header_length = infer_response("ctr", "3", request, np.array([0.25, 0.75], dtype=np.float32))
    result = InferenceServerClient.parse_response_body(content, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("score"), np.array([0.25, 0.75], dtype=np.float32))
    assert result.get_response()["model_name"] == "ctr" and result.get_response()["id"] == "r1"
    assert (header_length is not None) == (as_binary is not False)  # no outputs named: Triton's default is binary


def test_scatter_puts_each_groups_scores_at_its_rows():
    body, header = _triton([5, 6, 5, 6], [1, 2, 3, 4], binary=False)
    groups = row_groups(parse_infer(body, header, SIG, 10), SCHEMA)
    out = scatter(groups, [np.array([0.1, 0.3], np.float32), np.array([0.2, 0.4], np.float32)], 4)
    np.testing.assert_allclose(out, [0.1, 0.2, 0.3, 0.4])


def _json(doc) -> bytes:
    return json.dumps(doc).encode()


def _ids(**over):
    return {"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                       {"name": "item_id", "shape": [2], "datatype": "INT64", "data": [3, 4]}], **over}


@pytest.mark.parametrize("body,match", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (_json({"inputs": []}), "non-empty list"),
    (_json({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}), "'item_id' is missing"),
    (_json({"inputs": [{"name": "userid", "shape": [1], "datatype": "INT64", "data": [1]}]}), "inputs\\[0\\].name is 'userid'"),
    (_json({"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]}]}), "datatype 'FP32'; this model takes INT64"),
    (_json({"inputs": [{"name": "user_id", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]}]}), "shape \\[2, 1\\]"),
    (_json({"inputs": [{"name": "user_id", "shape": [3], "datatype": "INT64", "data": [1, 2]}]}), "has 2 values but its shape says \\[3\\]"),
    (_json({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": ["1"]}]}), "INT64 but holds '1'"),
    (_json({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [2**70]}]}), "outside INT64"),
    (_json({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64"}]}), "has no `data`"),
    (_json({"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                       {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [3]}]}), "same number of rows"),
    (_json({**_ids(), "inputs": [*_ids()["inputs"], {"name": "price", "shape": [2], "datatype": "FP32", "data": [1.0, float("nan")]}]}), "NaN"),
    (_json(_ids(outputs=[{"name": "prob"}])), "outputs\\[0\\] asks for 'prob'"),
    (_json(_ids(id=7)), "`id` must be a string"),
])
def test_malformed_requests_name_the_field(body, match):
    with pytest.raises(V2Error, match=match):
        parse_infer(body, None, SIG, max_rows=100)


def test_too_many_rows_and_a_wrong_binary_size_are_refused():
    with pytest.raises(V2Error, match="serve.max_rows"):
        parse_infer(_json(_ids()), None, SIG, max_rows=1)
    body, header = _triton([1, 2], [3, 4], binary=True)
    with pytest.raises(V2Error, match="binary data"):
        parse_infer(body[:-3], header, SIG, max_rows=10)
    with pytest.raises(V2Error, match=HEADER):
        parse_infer(body, "lots", SIG, max_rows=10)
