"""Each failure a user can cause ends in one line saying what and how to fix."""

import os
import subprocess

from tests.conftest import MLSYS, REPO, free_port


def _mlsys(*args, env=None, timeout=300):
    return subprocess.run([MLSYS, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _one_clear_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mlsys: error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in last, last


def test_bad_override(tmp_path):
    _one_clear_line(_mlsys("run", f"home.root={tmp_path}", "model.embed_dimm=32"), "embed_dimm")


def test_unreachable_cluster(tmp_path):
    port = free_port()  # nothing listens there
    _one_clear_line(_mlsys("run", f"home.root={tmp_path}", f"cluster.address=127.0.0.1:{port}"), "Cannot reach the Ray cluster", "ray start --head")


def test_missing_dataset_package(tmp_path):
    # A `recbole` that lacks the MovieLens files shadows the installed one.
    fake = tmp_path / "site" / "recbole"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    proc = _mlsys("run", f"home.root={tmp_path / 'home'}", env={"PYTHONPATH": str(tmp_path / "site")})
    _one_clear_line(proc, "Step 'ingest' failed", "recbole==1.2.1", "--no-deps")


def test_missing_model(tmp_path):
    _one_clear_line(_mlsys("serve", f"home.root={tmp_path}", "serve.model=nosuch@champion"), "No model at 'nosuch@champion'")
