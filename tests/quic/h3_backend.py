"""A real HTTP/3 server (aioquic) for passthrough tests: Retry on, connection IDs recorded.

    python tests/quic/h3_backend.py --port P --name NAME --cert C --key K --log FILE
        [--no-retry] [--quic-lb-sid HEX --quic-lb-config-id N]

Every response body is `NAME ODCID_HEX PEER` (the connection's original destination
connection ID, the one the client chose, and the peer address the server sends to): a
client can check that all its requests were served by one backend and one connection,
and whether the server ever saw the connection move. Every new connection appends `NAME ODCID_HEX` to --log
(flushed at once, so a killed backend's record survives). With --quic-lb-sid the server
mints every connection ID it issues (handshake SCID, NEW_CONNECTION_ID, Retry SCID) in
the QUIC-LB plaintext form: config id in the first octet's high bits, then the server ID.
Prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import types

import aioquic.asyncio.server as aio_server
import aioquic.quic.connection as quic_connection
from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

CID_LEN = 8


def install_quic_lb(server_id: bytes, config_id: int) -> None:
    """Make aioquic mint QUIC-LB plaintext CIDs (its CIDs come from os.urandom(8))."""

    def urandom(n: int) -> bytes:
        raw = os.urandom(n)
        if n != CID_LEN:
            return raw
        first = (config_id << 5) | (raw[0] & 0x1F)
        return bytes([first]) + server_id + raw[1 + len(server_id) :]

    shim = types.SimpleNamespace(urandom=urandom)
    quic_connection.os = shim  # type: ignore[assignment]
    aio_server.os = shim  # type: ignore[attr-defined]


class H3Server(QuicConnectionProtocol):
    name = ""
    log = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._h3: H3Connection | None = None
        odcid = self._quic._original_destination_connection_id
        self.odcid = odcid.hex()
        assert self.log is not None
        self.log.write(f"{self.name} {self.odcid}\n")
        self.log.flush()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and h3_event.stream_ended:
                peer = self._quic._network_paths[0].addr  # the path this request came on
                body = f"{self.name} {self.odcid} {peer[0]}:{peer[1]}".encode()
                self._h3.send_headers(
                    h3_event.stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                )
                self._h3.send_data(h3_event.stream_id, body, end_stream=True)
        self.transmit()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--no-retry", action="store_true")
    p.add_argument("--quic-lb-sid")
    p.add_argument("--quic-lb-config-id", type=int, default=0)
    args = p.parse_args()
    if args.quic_lb_sid:
        install_quic_lb(bytes.fromhex(args.quic_lb_sid), args.quic_lb_config_id)
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.load_cert_chain(args.cert, args.key)
    H3Server.name = args.name
    H3Server.log = open(args.log, "a")  # noqa: SIM115 - lives as long as the process
    await serve(
        args.host,
        args.port,
        configuration=config,
        create_protocol=H3Server,
        retry=not args.no_retry,
    )
    print("ready", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
