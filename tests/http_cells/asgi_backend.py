"""The backend of the cell tests: one ASGI app that hypercorn serves as HTTP/1.1 and h2c.

Owns what a cell test needs to see on the far side: ``/headers`` answers with the request's
method, path, HTTP version and header list as JSON; ``/echo`` streams the request body back
(with the request trailers, if any, as response trailers); ``/bytes/N`` streams N bytes of a
fixed pattern; ``/sha`` answers with the SHA-256 and length of the request body;
``/trailers`` answers with response trailers; ``/status/N`` answers with status N; ``/slow/MS`` answers after MS milliseconds;
``/page`` is a small HTML page (for a browser to open before it fetches). Must
never buffer a whole body (the 1 GiB cells run through it).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PATTERN = bytes(range(256)) * 256  # 64 KiB
PAGE = b"<!doctype html><html><head><title>cells</title></head><body>cells page</body></html>"


def pattern_bytes(n: int) -> bytes:
    """The first n bytes /bytes/N sends (for small n, in tests)."""
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


async def _body_chunks(receive: Any):  # type: ignore[no-untyped-def]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _start(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], trailers: bool = False
) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": trailers}
    )


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    can_trail = "http.response.trailers" in scope.get("extensions", {})
    if path == "/headers":
        body = json.dumps(
            {
                "method": scope["method"],
                "path": scope["raw_path"].decode()
                + ("?" + scope["query_string"].decode() if scope["query_string"] else ""),
                "http_version": scope["http_version"],
                "headers": [
                    [n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]
                ],
            }
        ).encode()
        async for _ in _body_chunks(receive):
            pass
        await _start(
            send, 200, [(b"content-type", b"application/json"), (b"x-backend-says", b"hi")]
        )
        await send({"type": "http.response.body", "body": body})
    elif path == "/echo":
        await _start(
            send, 200, [(b"content-type", b"application/octet-stream")], trailers=can_trail
        )
        async for chunk in _body_chunks(receive):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if can_trail:
            await send(
                {"type": "http.response.trailers", "headers": [(b"x-echo-trailer", b"done")]}
            )
    elif path.startswith("/bytes/"):
        n = int(path.rsplit("/", 1)[1])
        await _start(send, 200, [(b"content-length", str(n).encode())])
        while n > 0:
            chunk = PATTERN[: min(n, len(PATTERN))]
            n -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": n > 0})
    elif path == "/sha":
        digest = hashlib.sha256()
        size = 0
        async for chunk in _body_chunks(receive):
            digest.update(chunk)
            size += len(chunk)
        body = json.dumps({"sha256": digest.hexdigest(), "bytes": size}).encode()
        await _start(send, 200, [(b"content-type", b"application/json")])
        await send({"type": "http.response.body", "body": body})
    elif path == "/trailers":
        async for _ in _body_chunks(receive):
            pass
        await _start(send, 200, [(b"content-type", b"text/plain")], trailers=can_trail)
        await send({"type": "http.response.body", "body": b"with trailers", "more_body": False})
        if can_trail:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})
    elif path.startswith("/slow/"):
        import trio

        async for _ in _body_chunks(receive):
            pass
        await trio.sleep(int(path.rsplit("/", 1)[1]) / 1000)
        await _start(send, 200, [(b"content-length", b"4")])
        await send({"type": "http.response.body", "body": b"slow"})
    elif path == "/page":
        async for _ in _body_chunks(receive):
            pass
        await _start(
            send, 200, [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(PAGE))]
        )
        await send({"type": "http.response.body", "body": PAGE})
    elif path.startswith("/status/"):
        async for _ in _body_chunks(receive):
            pass
        await _start(send, int(path.rsplit("/", 1)[1]), [(b"content-length", b"0")])
        await send({"type": "http.response.body", "body": b""})
    else:
        await _start(send, 404, [(b"content-length", b"0")])
        await send({"type": "http.response.body", "body": b""})
