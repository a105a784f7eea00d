"""Starting child processes from the supervisor's own thread, awaited through a pidfd.

Owns `spawn`, which runs `subprocess.Popen` on the trio thread and returns a
`ChildProcess` the supervisor can await, signal and read the exit of; and `AdoptedChild`,
the same for a worker the zygote forked (supervisor/zygote.py), which is the supervisor's
child by re-parenting (PR_SET_CHILD_SUBREAPER, `become_subreaper`), not by Popen.

Why not `trio.lowlevel.open_process`: it forks from one of trio's cached worker
threads, and a child's PR_SET_PDEATHSIG fires when the *thread* that forked it
exits (prctl(2)), not the process. Trio retires an idle cached thread after 10 s,
so on a quiet supervisor every worker was SIGKILLed about 10 s after it started.
Forking here costs the event loop a few milliseconds once per worker start.
It must never block waiting for a child: exits are awaited on a pidfd.
"""

from __future__ import annotations

import ctypes
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


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of our descendants (the workers the zygote forks) become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class AdoptedChild:
    """A child the supervisor did not fork itself, awaited, signalled and reaped through a
    pidfd opened while it cannot be reaped by anyone else (it is our child, unreaped)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = os.pidfd_open(pid)  # OSError when it is not there
        self._returncode: int | None = None
        self._wait_lock = trio.Lock()

    @property
    def returncode(self) -> int | None:
        if self._returncode is None and self._pidfd is not None:
            self._reap()
        return self._returncode

    def _reap(self) -> None:
        assert self._pidfd is not None
        try:
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            self._returncode = 255  # reaped elsewhere: its status is lost
            return
        if result is None:
            return
        if result.si_code == os.CLD_EXITED:
            self._returncode = result.si_status
        else:
            self._returncode = -result.si_status

    async def wait(self) -> int:
        async with self._wait_lock:
            while self.returncode is None:
                assert self._pidfd is not None
                await trio.lowlevel.wait_readable(self._pidfd)
            fd, self._pidfd = self._pidfd, None
            if fd is not None:
                os.close(fd)
        assert self._returncode is not None
        return self._returncode

    def send_signal(self, sig: int) -> None:
        if self._pidfd is not None and self.returncode is None:
            signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
