"""The server QuicConnection of `quic` listeners against aioquic's real client, in memory
(aioquic's own test style: datagrams handed across, time passed in, no sockets).

Flow control: credit comes back only as the application releases what it holds, so a
client cannot push more than one window while nothing is consumed (aioquic alone doubles
its limits as bytes arrive). SNI: the client's server name picks the certificate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from cryptography.x509.oid import NameOID

from gateway.http.server_names import ServerNameTable
from gateway.quic_cid import decode, mint, owner_of
from tools.make_certs import make_certs
from workers.quic_connection import CertificateChoice, GatewayQuicConnection, load_certificate

STREAM_WINDOW = 64 * 1024
CONNECTION_WINDOW = 256 * 1024


def _pair(
    tmp: Path,
    server_name: str = "localhost",
    names: list[list[str]] | None = None,
    cid_factory: Callable[[], bytes] | None = None,
) -> tuple[QuicConnection, GatewayQuicConnection]:
    certs = make_certs(tmp, extra={"other": ["other.example"]})
    loaded = [
        load_certificate(str(certs.cert), str(certs.key)),
        load_certificate(str(tmp / "other.pem"), str(tmp / "other.key")),
    ]
    table = ServerNameTable.from_names(names or [["localhost"], ["other.example"]])
    server_conf = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    server_conf.certificate = loaded[0].certificate
    server_conf.certificate_chain = loaded[0].chain
    server_conf.private_key = loaded[0].private_key
    server_conf.max_stream_data = STREAM_WINDOW
    server_conf.max_data = CONNECTION_WINDOW
    client_conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    client_conf.load_verify_locations(str(certs.ca_cert))
    client_conf.server_name = server_name
    client = QuicConnection(configuration=client_conf)
    client.connect(("127.0.0.1", 4433), now=0.0)
    first = client.datagrams_to_send(now=0.0)
    server = GatewayQuicConnection(
        configuration=server_conf,
        original_destination_connection_id=client.original_destination_connection_id,
        certificates=CertificateChoice(loaded, table),
        stream_window=STREAM_WINDOW,
        connection_window=CONNECTION_WINDOW,
        max_streams=10,
        cid_factory=cid_factory,
    )
    for data, _ in first:
        server.receive_datagram(data, ("127.0.0.1", 50000), now=0.0)
    _exchange(client, server)
    return client, server


class _Clock:
    now = 0.01


def _exchange(
    client: QuicConnection,
    server: GatewayQuicConnection,
    rounds: int = 300,
    on_server_events: Callable[[], None] | None = None,
) -> None:
    """Hand datagrams back and forth, 10 ms of simulated time a round, firing timers."""
    for _ in range(rounds):
        now = _Clock.now = _Clock.now + 0.01
        for conn in (client, server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, ("127.0.0.1", 4433), now=now)
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ("127.0.0.1", 50000), now=now)
        if on_server_events is not None:
            on_server_events()


class _App:
    """The application side of the server: takes stream bytes and holds them (a body buffer
    the core does not read) until told to release."""

    def __init__(self, server: GatewayQuicConnection, stream_id: int) -> None:
        self.server = server
        self.stream_id = stream_id
        self.received = 0

    def __call__(self) -> None:
        while (event := self.server.next_event()) is not None:
            if isinstance(event, StreamDataReceived) and event.stream_id == self.stream_id:
                n = len(event.data)
                self.received += n
                self.server.delivered_bytes(self.stream_id, n)
                self.server.hold(self.stream_id, n)


def test_credit_returns_only_as_the_application_releases(tmp_path: Path) -> None:
    client, server = _pair(tmp_path)
    sid = client.get_next_available_stream_id()
    server.track(sid)
    app = _App(server, sid)
    client.send_stream_data(sid, b"x" * (4 * 1024 * 1024))
    _exchange(client, server, on_server_events=app)
    # Nothing consumed: the client stopped at the one window it was given.
    assert app.received == STREAM_WINDOW
    assert client._streams[sid].max_stream_data_remote == STREAM_WINDOW

    server.release(sid, app.received)  # the core took it all
    _exchange(client, server, on_server_events=app)
    # Exactly one more window, not aioquic's doubling.
    assert app.received == 2 * STREAM_WINDOW
    assert client._streams[sid].max_stream_data_remote == 2 * STREAM_WINDOW


def test_the_connection_window_bounds_many_held_streams(tmp_path: Path) -> None:
    client, server = _pair(tmp_path)
    apps = []
    for _ in range(8):  # 8 streams x 64 KiB windows > the 256 KiB connection window
        sid = client.get_next_available_stream_id()
        server.track(sid)
        apps.append(_App(server, sid))
        client.send_stream_data(sid, b"z" * (256 * 1024))

    def all_apps() -> None:
        events = []
        while (event := server.next_event()) is not None:
            events.append(event)
        for event in events:
            for app in apps:
                if isinstance(event, StreamDataReceived) and event.stream_id == app.stream_id:
                    app.received += len(event.data)
                    server.delivered_bytes(app.stream_id, len(event.data))
                    server.hold(app.stream_id, len(event.data))

    _exchange(client, server, on_server_events=all_apps)
    assert sum(a.received for a in apps) == CONNECTION_WINDOW
    assert server.held_total == CONNECTION_WINDOW


def test_an_untracked_stream_keeps_aioquics_own_credit(tmp_path: Path) -> None:
    """Control and QPACK streams (and aioquic's own rule) are left alone."""
    client, server = _pair(tmp_path)
    sid = client.get_next_available_stream_id(is_unidirectional=True)
    client.send_stream_data(sid, b"y" * (300 * 1024))
    app = _App(server, sid)
    _exchange(client, server, on_server_events=app)
    assert app.received == 300 * 1024


def _peer_common_name(client: QuicConnection) -> str:
    cert = client.tls._peer_certificate
    assert cert is not None
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_sni_selects_the_certificate_serving_the_name(tmp_path: Path) -> None:
    client, server = _pair(tmp_path, server_name="other.example")
    assert _peer_common_name(client) == "other.example"
    assert server.server_name == "other.example"
    assert client._handshake_complete


def test_an_unknown_name_gets_the_default_certificate(tmp_path: Path) -> None:
    client, server = _pair(tmp_path, server_name="localhost")
    assert _peer_common_name(client) == "localhost"
    assert server.server_name == "localhost"


def test_every_connection_id_the_server_issues_names_its_owner(tmp_path: Path) -> None:
    owner = owner_of(31337, 1)
    client, server = _pair(tmp_path, cid_factory=lambda: mint(owner, os.urandom))
    assert client._handshake_complete
    issued = [c.cid for c in server._host_cids]
    assert len(issued) > 1  # the first and those NEW_CONNECTION_ID announced
    assert all(decode(cid) == owner for cid in issued)
    # The client addresses the server by those IDs only.
    known = [c.cid for c in client._peer_cid_available] + [client._peer_cid.cid]
    assert known and all(decode(cid) == owner for cid in known)
