"""Real HTTP/3 clients (aioquic) for passthrough tests, as a library and as a process.

    python tests/quic/h3_clients.py --port P --ca CA --connections N [--requests 5]
        [--concurrency C] [--cpu K] [--until-file F]

Each connection makes its requests one after another and records the bodies (the
backend's `NAME ODCID`); it counts as served when every request got a 200 whose body
names the connection's own original DCID. The process prints one JSON object per
connection. `--cpu` pins the client (on loopback a datagram is received on the CPU
that sent it, so this chooses the gateway worker).
`--until-file F`: keep opening connections until F exists (traffic during chaos);
`--pause-ms` between requests makes connections live across it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

CONNECTION_TIMEOUT_S = 20.0


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.h3 = H3Connection(self._quic)
        self._waiters: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._bodies: dict[int, bytearray] = {}
        self._status: dict[int, int] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self.h3.handle_event(event):
            self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            self._status[ev.stream_id] = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, DataReceived):
            self._bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
        else:
            return
        waiter = self._waiters.get(ev.stream_id)
        if ev.stream_ended and waiter is not None and not waiter.done():
            waiter.set_result(
                (self._status.get(ev.stream_id, 0), bytes(self._bodies.get(ev.stream_id, b"")))
            )

    async def get(self, authority: str, path: str) -> tuple[int, bytes]:
        stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[stream_id] = waiter
        self.transmit()
        return await waiter

    @property
    def odcid(self) -> str:
        return self._quic._original_destination_connection_id.hex()


@dataclass
class ConnResult:
    index: int
    ok: bool = False
    odcid: str = ""
    bodies: list[str] = field(default_factory=list)
    error: str = ""
    started_at: float = 0.0

    @property
    def backends(self) -> set[str]:
        return {b.split()[0] for b in self.bodies}

    @property
    def peers(self) -> set[str]:
        """The client addresses the backend saw (more than one: it saw a migration)."""
        return {b.split()[2] for b in self.bodies}


Action = Callable[[H3Client, int], Awaitable[None]]


def client_config(ca: str) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.load_verify_locations(ca)
    config.verify_mode = ssl.CERT_REQUIRED
    config.server_name = "localhost"
    return config


async def one_connection(
    host: str,
    port: int,
    ca: str,
    index: int,
    requests: int,
    after_request: Action | None = None,
    local_port: int = 0,
    pause_s: float = 0.0,
    timeout_s: float = CONNECTION_TIMEOUT_S,
) -> ConnResult:
    result = ConnResult(index, started_at=time.time())
    try:
        async with asyncio.timeout(timeout_s + requests * pause_s):
            async with connect(
                host,
                port,
                configuration=client_config(ca),
                create_protocol=H3Client,
                local_port=local_port,
            ) as client:
                assert isinstance(client, H3Client)
                result.odcid = client.odcid
                for r in range(requests):
                    status, body = await client.get("localhost", f"/c{index}/r{r}")
                    if status != 200:
                        raise RuntimeError(f"request {r}: status {status}")
                    result.bodies.append(body.decode())
                    if after_request is not None:
                        await after_request(client, r)
                    if pause_s:
                        await asyncio.sleep(pause_s)
        names = {b.split()[1] for b in result.bodies}
        result.ok = len(result.bodies) == requests and names == {result.odcid}
        if not result.ok:
            result.error = f"bodies {result.bodies} for odcid {result.odcid}"
    except BaseException as exc:  # a failed connection is data here, not a crash
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def many_connections(
    host: str,
    port: int,
    ca: str,
    *,
    connections: int,
    requests: int,
    concurrency: int,
    after_request: Action | None = None,
    until_file: Path | None = None,
    pause_s: float = 0.0,
    timeout_s: float = CONNECTION_TIMEOUT_S,
) -> list[ConnResult]:
    sem = asyncio.Semaphore(concurrency)
    results: list[ConnResult] = []

    async def run(i: int) -> None:
        async with sem:
            results.append(
                await one_connection(host, port, ca, i, requests, after_request, pause_s=pause_s)
            )

    if until_file is None:
        await asyncio.gather(*(run(i) for i in range(connections)))
        return results
    tasks = []
    i = 0
    while not until_file.exists():
        await sem.acquire()
        sem.release()
        tasks.append(asyncio.create_task(run(i)))
        i += 1
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--requests", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--cpu", type=int)
    p.add_argument("--until-file")
    p.add_argument("--pause-ms", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=CONNECTION_TIMEOUT_S)
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    results = asyncio.run(
        many_connections(
            args.host,
            args.port,
            args.ca,
            connections=args.connections,
            requests=args.requests,
            concurrency=args.concurrency,
            until_file=Path(args.until_file) if args.until_file else None,
            pause_s=args.pause_ms / 1000,
            timeout_s=args.timeout_s,
        )
    )
    for r in results:
        print(json.dumps(asdict(r)), flush=True)


if __name__ == "__main__":
    main()
