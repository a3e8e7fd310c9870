import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory, ray_local):
    """The default pipeline, run once on MovieLens (1 epoch) in a fresh home."""
    import mlsys

    home = tmp_path_factory.mktemp("home")
    overrides = [f"home.root={home}", "train.max_epochs=1"]
    result = mlsys.run_pipeline(overrides)
    return home, overrides, result


@pytest.fixture(scope="module")
def serve_port(ray_local):
    """The HTTP port of the session's one Serve, started here if none runs.

    Modules deploy their apps into it with ``serve.port=<this>`` and ``serve.delete`` them when done:
    a ``serve.shutdown()`` and a new start cost 10-20 s a module. A test that stops Serve or moves it
    to another port (test_gate's infra test does) leaves the next module a Serve of its own."""
    from ray import serve

    from mlsys.serve.app import running_serve_port
    from tests.conftest import free_port

    port = running_serve_port()
    if port is None:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    return port
