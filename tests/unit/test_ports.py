"""A port something else holds is one clear error naming the config key that chose it."""

import socket

import pytest

from mlsys.api.config import compose_config
from mlsys.errors import PortInUseError, require_free_port


@pytest.fixture
def taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_port_is_refused_by_its_key(taken):
    with pytest.raises(PortInUseError, match=rf"^serve\.port={taken}: port {taken} on 127\.0\.0\.1 is already in use.*serve\.port={taken + 1}"):
        require_free_port("127.0.0.1", taken, "serve.port")


def test_a_free_port_passes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    require_free_port("127.0.0.1", port, "serve.port")


def test_the_dashboard_names_ui_port(taken, tmp_path):
    from mlsys.ui.app import serve_forever

    cfg = compose_config([f"home.root={tmp_path}", f"ui.port={taken}"])
    with pytest.raises(PortInUseError, match=rf"^ui\.port={taken}: .*ui\.port={taken + 1}"):
        serve_forever(cfg, echo=lambda line: None)
