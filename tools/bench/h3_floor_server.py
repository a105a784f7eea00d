"""The floor of HTTP/3 in this stack: the least aioquic can do per request, as the
reference row of `python -m tools.bench h3`.

`python -m tools.bench.h3_floor_server PORT CERT KEY`: QUIC v1 + HTTP/3 on UDP
127.0.0.1:PORT (aioquic's asyncio `serve`, ALPN h3), answering every request with a fixed
200 "ok" itself, the way the bench's nginx backend answers HTTP/1.1. No proxying, no
limits, no header checks: what is left is the cost of aioquic's QUIC, TLS and H3 per
request, which a gateway built on aioquic cannot go below. A measuring stick, never a
product path; it imports nothing from the gateway.
"""

from __future__ import annotations

import asyncio
import sys

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

_HEADERS = [(b":status", b"200"), (b"content-length", b"2"), (b"server", b"h3-floor")]


class _Floor(QuicConnectionProtocol):
    h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_ended:
                self.h3.send_headers(ev.stream_id, _HEADERS)
                self.h3.send_data(ev.stream_id, b"ok", end_stream=True)
        self.transmit()


async def _main(port: int, cert: str, key: str) -> None:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.load_cert_chain(cert, key)
    await serve("127.0.0.1", port, configuration=config, create_protocol=_Floor)
    print(f"h3 floor serving on udp 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
