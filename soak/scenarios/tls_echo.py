"""TLS termination: the TCP echo sessions of `tcp_echo`, each over a fresh TLS
connection to a `tls` listener (certificate made by the runner), relayed in clear to the
echo backends. Handshakes per session keep the gateway's TLS setup and teardown busy."""

from __future__ import annotations

import ssl

import trio

from soak.client_errors import ClientError
from soak.scenario import ClientContext, Scenario
from soak.scenarios.tcp_echo import (
    ECHOES_PER_SESSION,
    PAYLOAD_BYTES,
    RATE_PER_TASK,
    TASKS,
    echo_sessions,
)

_contexts: dict[str | None, ssl.SSLContext] = {}


async def _tls(ctx: ClientContext) -> trio.abc.Stream:
    if ctx.ca_path not in _contexts:
        _contexts[ctx.ca_path] = ssl.create_default_context(cafile=ctx.ca_path)
    stream = await trio.open_ssl_over_tcp_stream(
        "localhost", ctx.port, ssl_context=_contexts[ctx.ca_path], https_compatible=False
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise ClientError("tls_handshake", str(cause))  # never allowed: a wrong certificate
        # the connection was cut during the handshake (a killed worker): a cut like any other
        raise ClientError(
            "eof_early" if isinstance(cause, ssl.SSLEOFError) else "reset", str(cause)
        )
    return stream


async def run(ctx: ClientContext) -> None:
    await echo_sessions(ctx, _tls)


SCENARIO = Scenario(
    name="tls_echo",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g} echoes/s of {PAYLOAD_BYTES} B over TLS, {ECHOES_PER_SESSION} per connection",
    front="tls",
    backend="tcp",
    run=run,
    tls=True,
)
