"""Large bodies stream through a bounded window: a stalled reader stalls the writer."""

from __future__ import annotations

import hashlib

import h11
import trio
from h1_peers import open_small_buffer_stream, small_buffer_connect, start_backend, start_proxy

TOTAL_BYTES = 20 * 1024 * 1024
PIECE = b"0123456789abcdef" * 4096  # 64 KiB
# Kernel buffers on the path (5 sockets x 64 KiB after doubling) + one proxy read window.
READ_AHEAD_BOUND_BYTES = 1024 * 1024


async def test_download_20mib_is_paced_by_the_client(nursery: trio.Nursery) -> None:
    sent = {"bytes": 0}

    async def handler(peer, req):
        await peer.read_body()
        await peer.send(
            h11.Response(status_code=200, headers=[(b"content-length", str(TOTAL_BYTES).encode())])
        )
        while sent["bytes"] < TOTAL_BYTES:
            await peer.send(h11.Data(data=PIECE))
            sent["bytes"] += len(PIECE)
        await peer.send(h11.EndOfMessage())

    backend = await start_backend(nursery, handler, small_buffers=True)
    proxy = await start_proxy(nursery, [backend], small_buffers=True, connect=small_buffer_connect)
    stream = await open_small_buffer_stream(proxy.port)
    await stream.send_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    await trio.sleep(0.5)  # the client does not read; the backend must stall
    assert 0 < sent["bytes"] <= READ_AHEAD_BOUND_BYTES, sent
    digest = hashlib.sha256()
    received = 0
    head = b""
    with trio.fail_after(20):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        digest.update(rest)
        received += len(rest)
        while received < TOTAL_BYTES:
            chunk = await stream.receive_some(65536)
            assert chunk
            digest.update(chunk)
            received += len(chunk)
    expected = hashlib.sha256(PIECE * (TOTAL_BYTES // len(PIECE))).hexdigest()
    assert received == TOTAL_BYTES and digest.hexdigest() == expected
    assert f"content-length: {TOTAL_BYTES}".encode() in head.lower()


async def test_upload_20mib_is_paced_by_the_backend(nursery: trio.Nursery) -> None:
    release = trio.Event()
    got = {}

    async def handler(peer, req):
        await release.wait()  # the backend does not read yet
        digest = hashlib.sha256()
        n = 0
        while True:
            event = await peer.next_event()
            if isinstance(event, h11.Data):
                digest.update(event.data)
                n += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        got.update(n=n, sha=digest.hexdigest())
        await peer.respond(200, b"done")

    backend = await start_backend(nursery, handler, small_buffers=True)
    proxy = await start_proxy(nursery, [backend], small_buffers=True, connect=small_buffer_connect)
    stream = await open_small_buffer_stream(proxy.port)
    sent = {"bytes": 0}

    async def upload() -> None:
        await stream.send_all(
            b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % TOTAL_BYTES
        )
        while sent["bytes"] < TOTAL_BYTES:
            await stream.send_all(PIECE)
            sent["bytes"] += len(PIECE)

    async with trio.open_nursery() as inner:
        inner.start_soon(upload)
        await trio.sleep(0.5)
        assert 0 < sent["bytes"] <= READ_AHEAD_BOUND_BYTES, sent
        release.set()
    with trio.fail_after(20):
        data = b""
        while b"done" not in data:
            data += await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert got == {
        "n": TOTAL_BYTES,
        "sha": hashlib.sha256(PIECE * (TOTAL_BYTES // len(PIECE))).hexdigest(),
    }
