"""The control socket's per-request error boundary and caller logging (issue 17, items 2, 17).

The real control server on a real unix socket, driven by gatewayctl's own client; the
supervisor behind it is a stand-in whose `reload` fails the way an unexpected bug would.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import structlog
import trio

from gateway.control import Request, Response
from supervisor.control_server import serve_control
from supervisor.ctl import call


class _Supervisor:
    def __init__(self, control_socket: str) -> None:
        self.plan = SimpleNamespace(
            config=SimpleNamespace(runtime=SimpleNamespace(control_socket=control_socket))
        )
        self.kernel_calls = 0

    async def reload(self) -> Response:
        raise RuntimeError("deny map full, say")

    async def kernel_command(self, args: list[str]) -> Response:
        self.kernel_calls += 1
        return Response(ok=True, data={"args": args})


async def test_a_failing_command_is_answered_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "ctl.sock")
    sup = _Supervisor(path)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sup)
            failed = await trio.to_thread.run_sync(call, path, Request(cmd="reload"))
            fine = await trio.to_thread.run_sync(call, path, Request(cmd="kernel", args=["stats"]))
            nursery.cancel_scope.cancel()
    assert not failed.ok
    assert failed.errors == ["internal error: RuntimeError: deny map full, say"]
    assert fine.ok and fine.data == {"args": ["stats"]} and sup.kernel_calls == 1
    [crash] = [e for e in logs if e["event"] == "control_command_failed"]
    assert crash["cmd"] == "reload" and crash["log_level"] == "error"
    commands = [e for e in logs if e["event"] == "control_command"]
    assert [e["cmd"] for e in commands] == ["reload", "kernel"]
    for e in commands:  # the caller: this process (gatewayctl's client ran in a thread)
        assert e["peer_uid"] == os.getuid() and e["peer_pid"] == os.getpid()
