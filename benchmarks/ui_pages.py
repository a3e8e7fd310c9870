"""Dashboard page times in a real browser (issue 16: each page <= 1 s with 200 runs and 50 model versions).

Seeds a copy of a trained home with 199 more pipeline runs (each a copy of the home's newest real run:
its parent and every step run, with their tags, params and metrics) and 49 more versions of its model
(copies of version 1 with its tags), then loads each page in headless Chromium (Debian's chromium and
chromedriver, `make test-servers`) on the seeded copy (candidate) and on the trained home as it was
(baseline: 1 run, 1 version), alternating; a page's time is from navigation start to the page drawn
(``body[data-ready]``, charts included), median over the repeats.

    mlsys run home.root=/tmp/bench-serve features=feast train.max_epochs=1
    python benchmarks/ui_pages.py --home /tmp/bench-serve --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Row, interleaved, median, record  # noqa: E402


def seed(home: Path, runs: int, versions: int) -> None:
    """``runs`` pipeline runs and ``versions`` model versions in all, copied from the newest real ones."""
    from mlflow.entities import Metric, Param

    from mlsys.registry.mlflow_store import Tag, client

    c = client(f"sqlite:///{home}/mlflow.db")
    ids = [e.experiment_id for e in c.search_experiments()]
    parents = c.search_runs(ids, f"tags.`{Tag.PIPELINE}` LIKE '%'", order_by=["attributes.start_time DESC"])
    template = parents[0]
    steps = c.search_runs([template.info.experiment_id], f"tags.`{Tag.PARENT}` = '{template.info.run_id}'")

    def copy(run, tags: dict) -> str:
        new = c.create_run(run.info.experiment_id, run_name=run.info.run_name, tags={**run.data.tags, **tags})
        now = int(time.time() * 1000)
        c.log_batch(new.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in run.data.metrics.items()],
                    params=[Param(k, v) for k, v in run.data.params.items()])
        c.set_terminated(new.info.run_id, status=run.info.status)
        return new.info.run_id

    for i in range(runs - len(parents)):
        parent = copy(template, {Tag.OVERRIDES: f'["seeded={i}"]'})
        for s in steps:
            copy(s, {Tag.PARENT: parent})
    name = "ctr"
    first = c.get_model_version(name, "1")
    for _ in range(versions - len(c.search_model_versions(f"name='{name}'"))):
        mv = c.create_model_version(name, source=first.source, run_id=first.run_id)
        for k, v in (first.tags or {}).items():
            c.set_model_version_tag(name, mv.version, k, v)


def serve(home: Path, port: int):
    import uvicorn

    from mlsys.api.config import compose_config
    from mlsys.ui.app import build_app

    cfg = compose_config([f"home.root={home}", f"ui.port={port}", "ui.token=bench"])
    server = uvicorn.Server(uvicorn.Config(build_app(cfg, "bench"), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default="/tmp/bench-serve",
                        help="a trained home (mlsys run home.root=H features=feast train.max_epochs=1: the features page reads its store)")
    parser.add_argument("--seeded", default="/tmp/bench-ui-seeded")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from mlsys.registry.mlflow_store import Tag, client
    from tests.browser import chromium
    from tests.conftest import free_port

    home, seeded = Path(args.home), Path(args.seeded)
    if not seeded.exists():
        shutil.copytree(home, seeded, ignore=shutil.ignore_patterns("ray_results", "cache"))
        started = time.perf_counter()
        seed(seeded, args.runs, args.versions)
        print(f"seeded {args.runs} runs, {args.versions} versions in {time.perf_counter() - started:.0f} s", flush=True)
    run_id = client(f"sqlite:///{home}/mlflow.db").search_runs(
        [e.experiment_id for e in client(f"sqlite:///{home}/mlflow.db").search_experiments()], f"tags.`{Tag.PIPELINE}` LIKE '%'")[0].info.run_id
    ports = {"seeded": free_port(), "base": free_port()}
    servers = [serve(seeded, ports["seeded"]), serve(home, ports["base"])]
    time.sleep(2)
    pages = ["#/runs", f"#/runs/{run_id}", f"#/data/{run_id}", "#/models", "#/lineage/ctr/1", "#/monitoring", "#/features"]
    rows, notes = [], []
    with chromium() as browser:
        def load(which: str, page: str):
            def measure() -> float:
                browser.get("about:blank")
                browser.get(f"http://127.0.0.1:{ports[which]}/{page}")
                deadline = time.monotonic() + 60
                while browser.execute_script("return document.body.dataset.ready") != page:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{page} on {which} did not draw in 60 s")
                    time.sleep(0.01)
                return float(browser.execute_script("return document.body.dataset.readyMs")) / 1000
            return measure

        for page in pages:  # one warm-up each (MLflow's first query per process, the browser's cache of plotly.js)
            load("seeded", page)(), load("base", page)()
        for page in pages:
            print(page, flush=True)
            c, b = interleaved(load("seeded", page), load("base", page), args.repeats)
            label = "run (one run's steps)" if page.count("/") > 1 and page.startswith("#/runs") else page.split("/")[1]
            rows.append(Row(f"page {label} drawn (target <= 1 s)", f"{args.runs} runs, {args.versions} versions",
                            "1 run, 1 version", median(c), median(b), "s", args.repeats))
    for s in servers:
        s.should_exit = True
    for r in rows:
        print(r.line())
    notes = (f"Chromium {_chromium_version()} headless at 1280x800, one tab; the dashboard (uvicorn, one process) and the browser on "
             f"the same 2-core machine. Time: navigation start to `body[data-ready]` (the page's API calls answered and every chart drawn). "
             f"Seeded: copies of the home's newest real pipeline run (its parent run and its 14 step runs, with their params, tags and metrics) "
             f"and of its model's version 1 (with its tags). Medians of {args.repeats} loads per side, alternating, after one warm-up load each.")
    if not args.no_record:
        record("Dashboard pages in a browser", rows, notes)


def _chromium_version() -> str:
    import subprocess

    return subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
