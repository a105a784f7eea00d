"""The HTTP/2 probe's protocol side, against h2 in the server role, in memory."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events

from gateway.health.h2_probe import H2Probe


def _server() -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    return server


def _probe_request(probe: H2Probe, server: h2.connection.H2Connection) -> list[object]:
    events = server.receive_data(probe.start())
    probe.receive(server.data_to_send())
    return events


def test_probe_sends_one_get_and_reads_the_status() -> None:
    probe = H2Probe(scheme=b"http", authority=b"svc", path=b"/healthz")
    server = _server()
    events = _probe_request(probe, server)
    (request,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert (b":path", b"/healthz") in request.headers
    assert (b":authority", b"svc") in request.headers
    assert server.remote_settings.enable_push == 0
    assert not probe.done
    server.send_headers(1, [(b":status", b"503")], end_stream=True)
    probe.receive(server.data_to_send())
    assert (probe.status, probe.problem) == (503, "")


def test_probe_reports_a_reset_a_goaway_and_an_early_close() -> None:
    probe = H2Probe(scheme=b"http", authority=b"svc", path=b"/")
    server = _server()
    _probe_request(probe, server)
    server.reset_stream(1, error_code=2)
    probe.receive(server.data_to_send())
    assert probe.problem == "stream reset by the backend (code 2)"

    probe = H2Probe(scheme=b"http", authority=b"svc", path=b"/")
    server = _server()
    _probe_request(probe, server)
    server.close_connection(error_code=0)
    probe.receive(server.data_to_send())
    assert probe.problem.startswith("GOAWAY before a response")

    probe = H2Probe(scheme=b"http", authority=b"svc", path=b"/")
    probe.start()
    probe.receive(b"")
    assert probe.problem == "closed before a response"
