"""Worker process entry point: `python -m workers.main --control-fd N`.

Started only by the supervisor, as a fresh interpreter or forked from the worker template
(workers/zygote.py, which then calls `main` itself). Dies with it (PR_SET_PDEATHSIG), pins
itself to its CPU, reads `Boot` from the control channel, builds its `Worker` (which reads
every file it needs), gives up every privilege (workers/privileges.py), then runs. Exit codes:
0 after a drain or stop, 3 when booting failed. SIGABRT (what the supervisor sends a
worker that stopped answering) prints every thread's stack to stderr, then aborts.
"""

from __future__ import annotations

import argparse
import ctypes
import encodings.idna
import faulthandler
import os
import signal
import socket as stdsocket
import sys

import structlog
import trio

from gateway.errors import EXIT_WORKER_BOOT
from gateway.ipc import Boot, BootFailed
from gateway.logs import configure_logging
from workers.channel import SupervisorChannel
from workers.privileges import drop_privileges
from workers.worker import Worker

_PR_SET_PDEATHSIG = 1
# Imported at start, not lazily: the first use may come after the switch to the worker
# user, who may not be allowed to read the interpreter's files (encodings.idna: name
# resolution encodes host names with it).
_PRELOADED = (encodings.idna,)


def die_with_parent(expected_parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected_parent:  # the supervisor died before prctl took effect
        os._exit(1)


async def _main(control_fd: int, parent_pid: int) -> int:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(stdsocket.socket(fileno=control_fd)))
    channel = SupervisorChannel(stream)
    boot: Boot | None = None
    async for message in channel.receive():
        if isinstance(message, Boot):
            boot = message
            break
    if boot is None:
        return EXIT_WORKER_BOOT
    os.sched_setaffinity(0, {boot.cpu})
    structlog.contextvars.bind_contextvars(
        worker=boot.worker_id, generation=boot.generation, cpu=boot.cpu, pid=os.getpid()
    )
    try:
        worker = Worker(boot, channel)
        dropped = drop_privileges(boot.plan.config.runtime.worker_user, parent_pid)
    except (OSError, RuntimeError, KeyError) as exc:
        await channel.send(BootFailed(reason=repr(exc)))
        return EXIT_WORKER_BOOT
    structlog.get_logger("expressgateway.worker").info(
        "worker_privileges_dropped",
        user=dropped.user,
        uid=dropped.uid,
        gid=dropped.gid,
        bounding_set_cleared=dropped.bounding_set_cleared,
    )
    await worker.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="expressgateway-worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-format", default="auto")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    configure_logging(args.log_format, os.environ.get("LOG_LEVEL", "info"))
    faulthandler.enable()
    return trio.run(_main, args.control_fd, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
