"""The baseline of ``benchmarks/serving.py --case rank``: one bare FastAPI + uvicorn process
doing what ``POST /v1/rank`` does, without Ray Serve.

    python benchmarks/bare_server.py --package PATH --port 8101

It loads the package with ``mlsys.load_model(PATH)`` (the same features, the package's tables
encoded once by its fitted preprocessor, ONNX Runtime with 1 intra-op thread: what a serving
replica runs) and answers ``POST /v1/rank`` with ``model.rank(user_id, candidates, k, context)``,
taking and returning the service's own request and response models (the same validation and
JSON). No feature log, no metrics, no access log: the least a Python service can do.
"""

# No `from __future__ import annotations`: FastAPI must see the request model itself, not the string
# "RankRequest" naming a local of build() (it would read it as a query parameter and answer 422).
import argparse
import uuid


def build(package: str):
    from fastapi import FastAPI, HTTPException

    import mlsys
    from mlsys.errors import InvalidRequestError
    from mlsys.serve.app import RankRequest, RankResponse, ScoredItemOut

    model = mlsys.load_model(package)
    api = FastAPI(title="bare ranking baseline")

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.post("/v1/rank")
    async def rank(request: RankRequest) -> RankResponse:
        try:
            ranking = model.rank(request.user_id, request.candidates, request.k, request.context)
        except InvalidRequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItemOut(item_id=i.item_id, score=i.score) for i in ranking.items],
            model="ctr", version=model.version, unknown_user=ranking.unknown_user,
            unknown_items=ranking.unknown_items, request_id=request.request_id or uuid.uuid4().hex,
        )

    return api


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="a model package folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    uvicorn.run(build(args.package), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
