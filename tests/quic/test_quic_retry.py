"""Address validation (Retry) and 0-RTT of `quic` listeners against aioquic's real client, in
memory (datagrams handed across, time passed in, no sockets): the decision the endpoint
takes for an Initial (workers/quic_retry.py) with the tokens of gateway/quic_retry_token.py,
then the server connection built from its verdict, which the client checks (RFC 9000 §7.3:
the server must echo the original DCID and the Retry's source ID).
"""

from __future__ import annotations

import os

import pytest
from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import SessionTicket

from gateway.quic_cid import decode, mint, owner_of
from gateway.quic_retry_token import TOKEN_LIFETIME_S, NewConnectionRate, RetryTokens
from tools.make_certs import make_certs
from workers.quic_connection import GatewayQuicConnection, QuicCertificate, load_certificate
from workers.quic_retry import INVALID_TOKEN_REASON, AddressValidation, Admit, Drop, Reply

CLIENT = ("127.0.0.1", 50000)
SERVER = ("127.0.0.1", 4433)
OWNER = owner_of(4242, 0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[QuicCertificate, str]:
    certs = make_certs(tmp_path_factory.mktemp("retry"))
    return load_certificate(str(certs.cert), str(certs.key)), str(certs.ca_cert)


def _server_conf(cert: QuicCertificate) -> QuicConfiguration:
    conf = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    conf.certificate, conf.certificate_chain, conf.private_key = (
        cert.certificate,
        cert.chain,
        cert.private_key,
    )
    return conf


def _client(ca: str, ticket: SessionTicket | None = None) -> QuicConnection:
    conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    conf.load_verify_locations(ca)
    conf.server_name = "localhost"
    conf.session_ticket = ticket
    return QuicConnection(configuration=conf, session_ticket_handler=lambda t: None)


def _validation(mode: str = "always", threshold: int = 200) -> AddressValidation:
    return AddressValidation(
        mode,  # type: ignore[arg-type]
        threshold,
        lambda: mint(OWNER, os.urandom),
        RetryTokens(b"k" * 32),
    )


def _initial(client: QuicConnection, now: float) -> tuple[list[bytes], object]:
    datagrams = [d for d, _ in client.datagrams_to_send(now=now)]
    header = pull_quic_header(Buffer(data=datagrams[0]), host_cid_length=8)
    assert header.packet_type is QuicPacketType.INITIAL and len(datagrams[0]) >= 1200
    return datagrams, header


def _serve(
    cert: QuicCertificate, client: QuicConnection, admit: Admit, first: list[bytes]
) -> GatewayQuicConnection:
    server = GatewayQuicConnection(
        configuration=_server_conf(cert),
        original_destination_connection_id=admit.original_dcid,
        retry_source_connection_id=admit.retry_scid,
        certificates=None,
        stream_window=65_536,
        connection_window=262_144,
        max_streams=10,
    )
    for data in first:
        server.receive_datagram(data, CLIENT, now=1.0)
    now = 1.0
    for _ in range(50):
        now += 0.01
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, SERVER, now=now)
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT, now=now)
    return server


def _retried(v: AddressValidation, client: QuicConnection, now: float = 1.0) -> tuple:
    """The client's first Initial gets a Retry; returns its second Initial."""
    _, header = _initial(client, now)
    reply = v.check(header, CLIENT, now)  # type: ignore[arg-type]
    assert isinstance(reply, Reply)
    retry = pull_quic_header(Buffer(data=reply.datagram), host_cid_length=8)
    assert retry.packet_type is QuicPacketType.RETRY
    assert decode(retry.source_cid) == OWNER  # the answer comes back to this worker
    client.receive_datagram(reply.datagram, SERVER, now=now)
    return _initial(client, now)


def test_a_client_without_token_gets_a_retry_then_connects(pki: tuple) -> None:
    cert, ca = pki
    v = _validation("always")
    client = _client(ca)
    client.connect(SERVER, now=1.0)
    first_dcid = client.original_destination_connection_id
    datagrams, header = _retried(v, client)
    assert header.token  # aioquic's client echoes the Retry token
    admit = v.check(header, CLIENT, 1.0)  # type: ignore[arg-type]
    assert admit == Admit(first_dcid, header.destination_cid)
    _serve(cert, client, admit, datagrams)
    # The client checked original_destination_connection_id and retry_source_connection_id.
    assert client._handshake_complete
    assert client._retry_count == 1


@pytest.mark.parametrize("tamper", ["forged", "expired", "other_address", "other_key"])
def test_a_bad_token_is_dropped(pki: tuple, tamper: str) -> None:
    _, ca = pki
    v = _validation("always")
    client = _client(ca)
    client.connect(SERVER, now=1.0)
    _, header = _retried(v, client)
    now, addr = 1.0, CLIENT
    if tamper == "forged":
        token = bytearray(header.token)
        token[12] ^= 0x01  # inside the original DCID: the MAC no longer matches
        header.token = bytes(token)
    elif tamper == "expired":
        now = 1.0 + TOKEN_LIFETIME_S + 0.5
    elif tamper == "other_address":
        addr = ("127.0.0.2", CLIENT[1])
    else:  # another worker's (or a restarted one's) key
        v.tokens = RetryTokens(b"z" * 32)
    assert v.check(header, addr, now) == Drop(INVALID_TOKEN_REASON)  # type: ignore[arg-type]


def test_never_serves_the_first_initial(pki: tuple) -> None:
    cert, ca = pki
    v = _validation("never")
    client = _client(ca)
    client.connect(SERVER, now=1.0)
    datagrams, header = _initial(client, 1.0)
    admit = v.check(header, CLIENT, 1.0)  # type: ignore[arg-type]
    assert admit == Admit(client.original_destination_connection_id, None)
    _serve(cert, client, admit, datagrams)
    assert client._handshake_complete and client._retry_count == 0
    assert v.retries_sent == 0


def test_above_rate_retries_only_past_the_threshold(pki: tuple) -> None:
    _, ca = pki
    v = _validation("above_rate", threshold=3)
    verdicts = []
    for i in range(5):
        client = _client(ca)
        client.connect(SERVER, now=1.0)
        _, header = _initial(client, 1.0)
        verdict = v.check(header, CLIENT, 1.0 + i * 0.1)  # type: ignore[arg-type]
        if isinstance(verdict, Admit):
            v.opened(1.0 + i * 0.1)
        verdicts.append(type(verdict).__name__)
    assert verdicts == ["Admit", "Admit", "Admit", "Reply", "Reply"]
    # Two seconds later the estimate has decayed: served directly again.
    client = _client(ca)
    client.connect(SERVER, now=3.5)
    _, header = _initial(client, 3.5)
    assert isinstance(v.check(header, CLIENT, 3.5), Admit)  # type: ignore[arg-type]


def test_the_rate_estimate_slides_over_two_windows() -> None:
    rate = NewConnectionRate()
    for _ in range(10):
        rate.note(5.9)
    assert rate.per_s(5.95) == 10
    assert rate.per_s(6.5) == pytest.approx(5.0)  # half of the previous second still counts
    assert rate.per_s(8.0) == 0


def test_zero_rtt_is_off_no_ticket_and_no_early_data(pki: tuple) -> None:
    """The server issues no session ticket; a client resuming with a ticket another server
    issued (same certificate) and sending early data gets a full handshake, nothing early."""
    cert, ca = pki
    client = _client(ca)
    tickets: list[SessionTicket] = []
    client._session_ticket_handler = tickets.append
    client.connect(SERVER, now=1.0)
    datagrams, header = _initial(client, 1.0)
    _serve(cert, client, Admit(header.destination_cid, None), datagrams)
    assert client._handshake_complete and tickets == []

    # A ticket from a server that does issue them (aioquic with a ticket store).
    issuer_client = _client(ca)
    issuer_client._session_ticket_handler = tickets.append
    issuer_client.connect(SERVER, now=1.0)
    first, _ = _initial(issuer_client, 1.0)
    issuer = QuicConnection(
        configuration=_server_conf(cert),
        original_destination_connection_id=issuer_client.original_destination_connection_id,
        session_ticket_handler=lambda t: None,
    )
    for data in first:
        issuer.receive_datagram(data, CLIENT, now=1.0)
    for _ in range(20):
        for data, _ in issuer.datagrams_to_send(now=1.1):
            issuer_client.receive_datagram(data, SERVER, now=1.1)
        for data, _ in issuer_client.datagrams_to_send(now=1.1):
            issuer.receive_datagram(data, CLIENT, now=1.1)
    assert tickets and tickets[0].max_early_data_size  # 0-RTT was offered by that server

    resuming = _client(ca, ticket=tickets[0])
    resuming.connect(SERVER, now=2.0)
    sid = resuming.get_next_available_stream_id()
    resuming.send_stream_data(sid, b"early request", end_stream=True)  # goes in 0-RTT
    datagrams, header = _initial(resuming, 2.0)
    server = _serve(cert, resuming, Admit(header.destination_cid, None), datagrams)
    done = [e for e in _events(resuming) if isinstance(e, HandshakeCompleted)]
    assert done and not done[0].early_data_accepted and not done[0].session_resumed
    assert server.tls.session_resumed is False


def _events(conn: QuicConnection) -> list[object]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out
