"""Arbitrary client bytes never crash the handler; curl as a real client."""

from __future__ import annotations

import subprocess

import trio
from h1_peers import start_backend, start_proxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http.limits import HttpLimits
from workers.http1 import Backend, H1Context, serve_h1_connection

_PREFIXES = [
    b"",
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), tail=st.binary(max_size=300))
def test_arbitrary_bytes_end_in_a_response_or_a_close(prefix: bytes, tail: bytes) -> None:
    async def scenario() -> None:
        client, server = trio.testing.memory_stream_pair()
        # No backend can be reached (port 9 on loopback refuses): every path ends locally.
        ctx = H1Context(
            listener="fuzz",
            pick_backend=lambda head, c, tried: Backend("none", "127.0.0.1", 9),
            limits=HttpLimits(header_timeout_ms=300, body_timeout_ms=300, head_timeout_ms=300),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_h1_connection, server, ctx, "198.51.100.1")
            await client.send_all(prefix + tail)
            await client.send_eof()
            with trio.fail_after(5):  # the handler must finish on its own: response or close
                out = b""
                while chunk := await client.receive_some(65536):
                    out += chunk
        if out:
            assert out.startswith(b"HTTP/1.1 "), out[:40]

    trio.run(scenario)


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, check=False
    )


async def test_curl_get_and_post_through_proxy(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    url = f"http://127.0.0.1:{proxy.port}/c"
    get = await trio.to_thread.run_sync(_curl, "-i", url, url)
    assert get.returncode == 0, get.stderr
    assert get.stdout.count(b"HTTP/1.1 200 OK") == 2 and get.stdout.count(b"echo:") == 2
    post = await trio.to_thread.run_sync(
        _curl, "-H", "Transfer-Encoding: chunked", "--data-binary", "payload", url
    )
    assert post.stdout == b"echo:payload", post
    assert backend.connections == 1  # the upstream pool is shared by both client connections
