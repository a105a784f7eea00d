"""Worker process entry point: `python -m workers.main --control-fd N`.

Started only by the supervisor. Dies with it (PR_SET_PDEATHSIG), pins itself to
its CPU, reads `Boot` from the control channel, then runs `Worker`. Exit codes:
0 after a drain or stop, 3 when booting failed.
"""

from __future__ import annotations

import argparse
import ctypes
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
from workers.worker import Worker

_PR_SET_PDEATHSIG = 1


def _die_with_parent(expected_parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected_parent:  # the supervisor died before prctl took effect
        os._exit(1)


async def _main(control_fd: int) -> int:
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
    except (OSError, RuntimeError, KeyError) as exc:
        await channel.send(BootFailed(reason=repr(exc)))
        return EXIT_WORKER_BOOT
    await worker.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="expressgateway-worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-format", default="auto")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    configure_logging(args.log_format, os.environ.get("LOG_LEVEL", "info"))
    return trio.run(_main, args.control_fd)


if __name__ == "__main__":
    sys.exit(main())
