"""The control socket: a unix stream socket (mode 0600) serving gatewayctl.

One JSON request line per connection, one JSON response line. Bad requests get a
clear error response; nothing a client sends can stop the server: each request has its
own error boundary (a command that fails unexpectedly is answered `ok: false` and logged
with its traceback). Every command is logged with the caller's uid and pid (SO_PEERCRED).
"""

from __future__ import annotations

import os
import socket as stdsocket
import stat
import struct
from typing import TYPE_CHECKING

import structlog
import trio

from gateway.control import (
    MAX_REQUEST_BYTES,
    BadRequest,
    Request,
    Response,
    encode_response,
    parse_request,
)
from supervisor import status_report

if TYPE_CHECKING:
    from supervisor.main import Supervisor

log = structlog.get_logger("expressgateway.supervisor")
_READ_TIMEOUT_S = 5.0


class ControlSocketInUse(RuntimeError):
    pass


def _prepare_path(path: str) -> None:
    os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketInUse(f"{path} exists and is not a socket")
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale socket of a supervisor that is gone
        return
    finally:
        probe.close()
    raise ControlSocketInUse(f"another supervisor is serving {path}")


async def serve_control(
    sup: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    path = sup.plan.config.runtime.control_socket
    _prepare_path(path)
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, sup, stream, nursery)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            break
        buf += data
        if len(buf) > MAX_REQUEST_BYTES:
            raise BadRequest(f"control request exceeds {MAX_REQUEST_BYTES} bytes")
    return bytes(buf).split(b"\n", 1)[0]


def peer_credentials(stream: trio.SocketStream) -> tuple[int, int]:
    """(uid, pid) of the process at the other end of a unix stream socket; -1 if unknown."""
    try:
        raw = stream.socket.getsockopt(
            stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i")
        )
    except OSError:
        return -1, -1
    pid, uid, _gid = struct.unpack("3i", raw)
    return uid, pid


async def _serve_one(sup: Supervisor, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
    async with stream:
        uid, pid = peer_credentials(stream)
        request: Request | None = None
        try:
            with trio.fail_after(_READ_TIMEOUT_S):
                line = await _read_line(stream)
            request = parse_request(line)
            log.info(
                "control_command",
                cmd=request.cmd,
                worker=request.worker,
                args=request.args or None,
                peer_uid=uid,
                peer_pid=pid,
            )
            response = await dispatch(sup, request, nursery)
        except BadRequest as exc:
            log.warning("control_request_rejected", error=str(exc), peer_uid=uid, peer_pid=pid)
            response = Response(ok=False, errors=[str(exc)])
        except trio.TooSlowError:
            response = Response(ok=False, errors=[f"no complete request within {_READ_TIMEOUT_S}s"])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception as exc:  # the per-request boundary; cancellation passes
            log.exception(
                "control_command_failed",
                cmd=request.cmd if request else None,
                peer_uid=uid,
                peer_pid=pid,
            )
            response = Response(ok=False, errors=[f"internal error: {type(exc).__name__}: {exc}"])
        try:
            await stream.send_all(encode_response(response))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def dispatch(sup: Supervisor, request: Request, nursery: trio.Nursery) -> Response:
    cmd = request.cmd
    if cmd == "status":
        return Response(ok=True, data=status_report.status(sup))
    if cmd == "workers":
        return Response(ok=True, data=status_report.worker_rows(sup))
    if cmd == "reload":
        return await sup.reload()
    if cmd == "drain":
        if request.worker is None:
            return Response(ok=False, errors=["drain needs a worker id (see `gatewayctl workers`)"])
        if request.timeout_s is not None and not 0 < request.timeout_s <= 3600:
            return Response(
                ok=False,
                errors=[f"--timeout must be in (0, 3600] seconds, got {request.timeout_s}"],
            )
        return await sup.drain_worker(
            request.worker, timeout_s=request.timeout_s, replace=request.replace
        )
    if cmd == "stop":
        nursery.start_soon(sup.stop_now if request.now else sup.stop_graceful)
        return Response(ok=True, data={"stopping": "now" if request.now else "graceful"})
    if cmd == "backends":
        return Response(ok=True, data=status_report.backend_rows(sup))
    if cmd == "kernel":
        return await sup.kernel_command(request.args)
    return Response(ok=False, errors=[f"unknown command {cmd!r}"])
