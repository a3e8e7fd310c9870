import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory, ray_local):
    """The default pipeline, run once on MovieLens (1 epoch) in a fresh home."""
    import mlsys

    home = tmp_path_factory.mktemp("home")
    overrides = [f"home.root={home}", "train.max_epochs=1"]
    result = mlsys.run_pipeline(overrides)
    return home, overrides, result
