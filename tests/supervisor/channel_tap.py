"""Reach into the supervisor <-> worker control channel of live processes (root).

`pidfd_getfd(2)` duplicates a file descriptor of another process into the test, so a test
can write on a worker's end of its channel exactly what a compromised or buggy worker
would send, or stuff the supervisor's end so its sends to a stopped worker block.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from pathlib import Path

_SYS_PIDFD_GETFD = 438  # the same number on every architecture (new syscall table)


def steal_fd(pid: int, fd: int) -> int:
    """A duplicate, in this process, of `pid`'s descriptor `fd` (close it when done)."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        new = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if new < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return int(new)
    finally:
        os.close(pidfd)


def worker_control_fd(worker_pid: int) -> int:
    """The worker's end of its channel (its `--control-fd` argument)."""
    argv = Path(f"/proc/{worker_pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--control-fd") + 1])


def _inode(pid: int, fd: int) -> int:
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    m = re.fullmatch(r"socket:\[(\d+)\]", link)
    assert m, link
    return int(m.group(1))


def supervisor_end(supervisor_pid: int, worker_pid: int) -> int:
    """The supervisor's descriptor for its channel to `worker_pid` (peer inode via ss)."""
    mine = _inode(worker_pid, worker_control_fd(worker_pid))
    out = subprocess.run(["ss", "-xan"], capture_output=True, text=True, check=True).stdout
    peer = None
    for line in out.splitlines():
        fields = line.split()
        # u_str ESTAB 0 0 * <inode> * <peer inode>
        if len(fields) >= 8 and fields[0] == "u_str" and fields[5] == str(mine):
            peer = int(fields[7])
    assert peer is not None, f"no unix socket with inode {mine} in ss output"
    for name in os.listdir(f"/proc/{supervisor_pid}/fd"):
        try:
            if _inode(supervisor_pid, int(name)) == peer:
                return int(name)
        except (OSError, AssertionError):
            continue
    raise AssertionError(f"supervisor {supervisor_pid} holds no socket with inode {peer}")
