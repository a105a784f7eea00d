"""WebSocket over HTTP/2 through the real gateway (supervisor and worker processes, the
config file): the `websockets` echo backend of the HTTP/1.1 WebSocket tests behind an `h1`
listener's HTTP/2 front, and the `[listeners.h2] enable_connect_protocol` key turning it off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import h2.settings
import pytest
from running_gateway import RunningGateway, free_port, wait_for_port
from ws_h2_peers import H2WsClient
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

ECHO_BACKEND = Path(__file__).resolve().parents[2] / "http1" / "ws_echo_backend.py"
_ENABLE_CONNECT = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


def _config(on_port: int, off_port: int, backend_port: int) -> str:
    listeners = ""
    for name, port, h2_table in (
        ("ws-on", on_port, ""),
        ("ws-off", off_port, "[listeners.h2]\nenable_connect_protocol = false\n"),
    ):
        listeners += f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "h1"
{h2_table}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
    return f"""
[runtime]
workers = 1
drain_timeout_ms = 3000

[observability]
log_format = "json"
access_log = false
{listeners}
"""


@pytest.fixture(scope="module")
def gateway_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    backend_port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(ECHO_BACKEND), str(backend_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    on_port, off_port = free_port(), free_port()
    gateway = RunningGateway(
        tmp_path_factory.mktemp("wsh2"), _config(on_port, off_port, backend_port)
    )
    try:
        wait_for_port(backend_port)
        gateway.start()
        yield on_port, off_port
    finally:
        gateway.stop()
        backend.kill()
        backend.wait()


async def _message(client: H2WsClient, sid: int) -> str | bytes:
    parts: list[str | bytes] = []
    while True:
        event = await client.next_event(sid)
        assert isinstance(event, (TextMessage, BytesMessage)), event
        parts.append(event.data)
        if event.message_finished:
            return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]


async def test_websocket_over_h2_through_the_gateway(gateway_ports: tuple[int, int]) -> None:
    client = await H2WsClient.open(gateway_ports[0])
    assert client.server_settings is not None
    assert client.server_settings.get(_ENABLE_CONNECT) == 1
    sid = await client.connect("/echo")
    assert client.streams[sid].head[b":status"] == b"200"  # type: ignore[index]
    await client.send(sid, TextMessage(data="hello"))
    assert await _message(client, sid) == "hello"
    await client.send(sid, BytesMessage(data=b"bin", message_finished=False))
    await client.send(sid, BytesMessage(data=b"ary", message_finished=True))
    assert await _message(client, sid) == b"binary"
    big = os.urandom(1 << 20)
    await client.send(sid, BytesMessage(data=big))
    assert await _message(client, sid) == big
    await client.send(sid, Ping(payload=b"p"))
    pong = await client.next_event(sid)
    assert isinstance(pong, Pong) and pong.payload == b"p"
    await client.send(sid, CloseConnection(code=4001, reason="bye"))
    close = await client.next_event(sid)
    assert isinstance(close, CloseConnection) and close.code == 4001
    assert (await client.until_done(sid)).reset is None


async def test_enable_connect_protocol_false_in_the_config(gateway_ports: tuple[int, int]) -> None:
    client = await H2WsClient.open(gateway_ports[1])
    assert client.server_settings is not None
    assert client.server_settings.get(_ENABLE_CONNECT, 0) == 0
    sid = await client.connect("/echo")
    st = await client.until_done(sid)
    assert st.head is None and st.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    plain = await client.get("/")  # the connection serves ordinary requests on
    assert plain.head is not None and not client.closed
