"""The runtime fetches nothing: models ship inside the package. Enrolling, listening and
verifying a recording open no network connection, and the client connects only to the server
address it is given (``rtverify/client.py``)."""

from __future__ import annotations

import socket

import pytest

from conftest import DEMO


@pytest.fixture
def connections(monkeypatch):
    """Every address a socket of this process tries to connect to."""
    seen = []
    real = socket.socket.connect

    def connect(self, address):
        seen.append((self.family, address))
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex",
                        lambda self, address: seen.append((self.family, address)) or 111)
    return seen


def _inet(seen):
    return [a for family, a in seen if family in (socket.AF_INET, socket.AF_INET6)]


def test_enroll_listen_and_verify_open_no_connection(tmp_path, connections, capsys):
    from rtverify.cli.entry import main

    store = str(tmp_path / "store")
    assert main(["--store", store, "enroll", "--name", "alice", "--input",
                 str(DEMO / "enroll_1.flac"), str(DEMO / "enroll_2.flac")]) == 0
    assert main(["--store", store, "listen", "--name", "alice", "--json", "--input",
                 str(DEMO / "conversation.flac")]) == 0
    assert main(["--store", store, "verify", "--name", "alice", "--input",
                 str(DEMO / "enroll_1.flac")]) == 0  # her own take: accepted
    assert '"event": "decision"' in capsys.readouterr().out
    assert _inet(connections) == []


def test_the_client_connects_only_to_its_server(connections):
    from rtverify.client import Client, ServerError

    with socket.socket() as s:  # a loopback port nobody listens on, held so none can take it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match="cannot reach the server"):
            Client(f"http://127.0.0.1:{port}", timeout_s=2).voices()
    assert _inet(connections) and all(a[:2] == ("127.0.0.1", port)
                                      for a in _inet(connections))


def test_the_client_follows_no_redirect(connections):
    """A server (or something posing as one) that answers with a redirect does not send the
    client, nor its token, anywhere else: the call fails with a one-line error naming it."""
    import http.server
    import threading

    from rtverify.client import Client, ServerError

    elsewhere = socket.socket()  # where the redirect points: must never be connected to
    elsewhere.bind(("127.0.0.1", 0))
    elsewhere.listen(1)
    elsewhere.settimeout(0.5)
    target = f"http://127.0.0.1:{elsewhere.getsockname()[1]}/v1/voices"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with pytest.raises(ServerError, match="redirect") as err:
            Client(f"http://127.0.0.1:{port}", token="secret", timeout_s=5).voices()
        assert "\n" not in str(err.value) and err.value.code == 302
        with pytest.raises(socket.timeout):
            elsewhere.accept()  # nobody came
        assert all(a[:2] == ("127.0.0.1", port) for a in _inet(connections))
    finally:
        server.shutdown()
        server.server_close()
        elsewhere.close()
