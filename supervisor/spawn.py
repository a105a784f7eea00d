"""Starting child processes from the supervisor's own thread, awaited through a pidfd.

Owns `spawn`, which runs `subprocess.Popen` on the trio thread and returns a
`ChildProcess` the supervisor can await, signal and read the exit of.

Why not `trio.lowlevel.open_process`: it forks from one of trio's cached worker
threads, and a child's PR_SET_PDEATHSIG fires when the *thread* that forked it
exits (prctl(2)), not the process. Trio retires an idle cached thread after 10 s,
so on a quiet supervisor every worker was SIGKILLed about 10 s after it started.
Forking here costs the event loop a few milliseconds once per worker start.
It must never block waiting for a child: exits are awaited on a pidfd.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

import trio


class ChildProcess:
    """The subset of `trio.Process` the supervisor uses: pid, returncode, wait, signals."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = os.pidfd_open(popen.pid)
        self._wait_lock = trio.Lock()

    @property
    def returncode(self) -> int | None:
        """None while running; else the exit code, or -N for death by signal N."""
        return self._popen.poll()  # the pidfd stays readable after a reap here: wait() closes it

    async def wait(self) -> int:
        async with self._wait_lock:
            while self._popen.poll() is None:
                assert self._pidfd is not None
                await trio.lowlevel.wait_readable(self._pidfd)
            self._close_pidfd()
        return self._popen.returncode

    def send_signal(self, sig: int) -> None:
        self._popen.send_signal(sig)  # a no-op once the child has been reaped

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)  # only wait() closes it, under its lock: no task is parked on it


async def spawn(
    argv: Sequence[str], *, pass_fds: Sequence[int] = (), start_new_session: bool = False
) -> ChildProcess:
    """Start `argv` from the calling (trio) thread; OSError if it cannot be started."""
    popen = subprocess.Popen(list(argv), pass_fds=pass_fds, start_new_session=start_new_session)
    await trio.lowlevel.checkpoint()
    return ChildProcess(popen)
