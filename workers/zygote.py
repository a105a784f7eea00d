"""The worker template ("zygote"): `python -m workers.zygote --request-fd N --parent-pid P`.

Started by the supervisor (supervisor/zygote.py). It imports everything a worker runs
(workers.main and every module of the `workers` package, hence trio, h2, aioquic, msgspec
and the mypyc natives), freezes the heap (gc.freeze), then waits on its request socket.
It never starts trio, opens no socket and holds no fd but that socket (and 0/1/2).

One request, one worker: a `fork` message carries, by SCM_RIGHTS, exactly the fds this
worker needs (its control socket, its listening sockets, the QUIC tables) with the number
each must have. The zygote forks; that child forks the worker and exits at once, so the
worker is re-parented to the supervisor (a child subreaper) and is its direct child, as an
exec-spawned worker is: it can set PR_SET_PDEATHSIG on the supervisor, and the supervisor
reaps it. The worker then gives itself the fd table an exec-spawned worker has (its fds at
the supervisor's numbers, nothing else), the same command line, a new session, and runs
`workers.main.main` unchanged (pins itself on Boot, drops privileges, ...).

A `check` request asks whether any imported module's file changed on disk since it was
imported (an upgrade): the supervisor then replaces the zygote before forking from it.
Must never fork a worker that holds an fd of another worker or of the zygote, nor let a
worker's exception return into the zygote's loop. EOF on the request socket: exit 0.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import importlib
import os
import pkgutil
import socket
import sys
import threading
import time
import traceback
from typing import Any

import msgspec

from gateway.logs import configure_logging
from gateway.zygote_messages import (
    MAX_FDS,
    ForkReply,
    ForkRequest,
    ReadyReport,
    StaleReply,
    decode_request,
)
from workers.main import die_with_parent
from workers.proc_title import set_argv

REPARENT_WAIT_S = 2.0  # the worker waits this long to become the supervisor's child


def preload() -> int:
    """Import every module a worker may import; the number of modules loaded."""
    import workers
    import workers.main

    for info in pkgutil.walk_packages(workers.__path__, "workers."):
        if info.name not in ("workers.zygote",):
            importlib.import_module(info.name)
    return len(sys.modules)


def module_stamps() -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every imported module's file, as imported."""
    stamps = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return stamps


def first_changed(stamps: dict[str, tuple[int, int, int]]) -> str:
    """The first module file that differs on disk from what was imported ("" if none)."""
    for path, stamp in stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return path
        if (st.st_ino, st.st_size, st.st_mtime_ns) != stamp:
            return path
    return ""


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def install_fds(received: list[int], targets: list[int]) -> None:
    """Give this process exactly `targets` (fd numbers) backed by `received`, plus 0/1/2;
    close every other fd (the zygote's request socket, anything an import opened)."""
    base = max([*targets, *received, 2]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in received]
    keep = {0, 1, 2, *high}
    for fd in _open_fds():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the fd listing itself, already closed
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
    for fd in high:
        if fd not in targets:
            os.close(fd)


def _become_worker(request: ForkRequest, received: list[int]) -> int:
    """In the grandchild: wait for the re-parenting, set up fds and title, run the worker."""
    os.setsid()
    deadline = time.monotonic() + REPARENT_WAIT_S
    while os.getppid() != request.parent_pid:
        if time.monotonic() > deadline:
            return 1  # the supervisor is not our reaper: the supervisor sees an exit
        time.sleep(0.0005)
    install_fds(received, request.target_fds)
    argv = [
        sys.executable, "-m", "workers.main",
        "--control-fd", str(request.control_fd),
        "--parent-pid", str(request.parent_pid),
        "--log-format", request.log_format,
    ]  # fmt: skip
    set_argv(argv)
    import workers.main

    sys.argv = [str(workers.main.__file__), *argv[3:]]  # what `python -m` gives
    return workers.main.main(argv[3:])


def _run_child(request: ForkRequest, received: list[int], pid_w: int) -> None:
    """The intermediate child: fork the worker, tell the zygote its pid, exit."""
    try:
        pid = os.fork()
    except OSError as exc:
        os.write(pid_w, f"error {exc}".encode())
        os._exit(1)
    if pid == 0:
        code: Any = 1
        try:
            os.close(pid_w)
            code = _become_worker(request, received)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code if isinstance(code, int) else 1)
    os.write(pid_w, str(pid).encode())
    os._exit(0)


def fork_worker(request: ForkRequest, received: list[int]) -> ForkReply:
    pid_r, pid_w = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        os.close(pid_r)
        os.close(pid_w)
        return ForkReply(pid=0, error=f"fork: {exc}")
    if child == 0:
        try:  # never back into the zygote's loop: that would make a second zygote
            os.close(pid_r)
            _run_child(request, received, pid_w)
        finally:
            os._exit(1)
    os.close(pid_w)
    try:
        answer = os.read(pid_r, 256).decode()
    finally:
        os.close(pid_r)
        os.waitpid(child, 0)
    if answer.isdigit():
        return ForkReply(pid=int(answer))
    return ForkReply(pid=0, error=answer or "the forking child died")


def serve(request_sock: socket.socket) -> int:
    stamps = module_stamps()
    encoder = msgspec.json.Encoder()
    while True:
        try:
            data, received, _flags, _addr = socket.recv_fds(request_sock, 65536, MAX_FDS)
        except InterruptedError:
            continue
        if not data:
            for fd in received:
                os.close(fd)
            return 0
        try:
            request = decode_request(data)
        except msgspec.DecodeError as exc:
            for fd in received:
                os.close(fd)
            request_sock.send(encoder.encode(ForkReply(pid=0, error=f"bad request: {exc}")))
            continue
        if isinstance(request, ForkRequest):
            if len(received) != len(request.target_fds):
                reply: Any = ForkReply(
                    pid=0, error=f"{len(received)} fds for {len(request.target_fds)} targets"
                )
            else:
                reply = fork_worker(request, received)
            for fd in received:
                os.close(fd)
        else:
            for fd in received:
                os.close(fd)
            reply = StaleReply(changed=first_changed(stamps))
        request_sock.send(encoder.encode(reply))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="expressgateway-zygote")
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-format", default="auto")
    parser.add_argument("--title-room", default="", help="padding: room for a worker's argv")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    configure_logging(args.log_format, os.environ.get("LOG_LEVEL", "info"))
    request_sock = socket.socket(fileno=args.request_fd)
    modules = preload()
    gc.collect()
    gc.freeze()  # what the imports built is never collected: workers skip it and share it
    threads = threading.active_count()
    report = ReadyReport(
        pid=os.getpid(),
        modules=modules,
        import_cpu_s=round(time.process_time(), 3),
        threads=threads,
    )
    request_sock.send(msgspec.json.encode(report))
    if threads != 1:
        return 1  # forking a threaded process is unsafe; the supervisor falls back
    return serve(request_sock)


if __name__ == "__main__":
    sys.exit(main())
