"""A worker giving up every privilege once it has booted.

Owns `drop_privileges`: no_new_privs, the capability bounding set emptied (when the
process may), the ambient set cleared, the switch to the configured unprivileged user
when started as root, the effective/permitted/inheritable sets emptied, and the check of
/proc/self/status that all of it took. Workers need none of it: their listening sockets
are inherited and everything they read at boot (certificates, CA bundles) is already read.
Must never be called before boot has read what it needs, and never leave a worker
running with a privilege it failed to drop (it raises instead: the boot fails).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_SETPCAP = 8
_CAP_SETUID = 7


class PrivilegeDropFailed(RuntimeError):
    """A privilege could not be given up; the worker must not serve."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Dropped:
    """What the worker ended up with (logged once at boot)."""

    uid: int
    gid: int
    user: str
    bounding_set_cleared: bool


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int, what: str) -> None:
    if libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeDropFailed(f"{what}: {os.strerror(err)}")


def _status() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _has_effective(cap: int) -> bool:
    return bool(int(_status()["CapEff"], 16) >> cap & 1)


def _clear_capability_sets(libc: ctypes.CDLL) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise PrivilegeDropFailed(f"capset: {os.strerror(ctypes.get_errno())}")


def _switch_user(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeDropFailed(f"runtime.worker_user {user!r} does not exist") from None
    if entry.pw_uid == 0:
        raise PrivilegeDropFailed(f"runtime.worker_user {user!r} is uid 0")
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    return entry.pw_uid, entry.pw_gid


def drop_privileges(worker_user: str, parent_pid: int) -> Dropped:
    """Give up everything; raise PrivilegeDropFailed if anything is left.

    `worker_user` applies only when running as root ("" keeps the current user).
    `parent_pid`: a change of uid clears PR_SET_PDEATHSIG (prctl(2)), so it is set
    again afterwards and the parent checked, as at start.
    """
    libc = _libc()
    _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    _prctl(libc, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    # Emptying the bounding set needs CAP_SETPCAP (root has it; the systemd unit keeps it
    # in its bounding set for this). Without it the empty permitted and inheritable sets
    # plus no_new_privs already make every capability unreachable.
    bounding_cleared = _has_effective(_CAP_SETPCAP)
    if bounding_cleared:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last_cap = int(fh.read())
        for cap in range(last_cap + 1):
            _prctl(libc, _PR_CAPBSET_DROP, cap, f"PR_CAPBSET_DROP {cap}")
    uid, gid = os.getuid(), os.getgid()
    user = worker_user
    if os.geteuid() != 0 or not worker_user:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    if os.geteuid() == 0 and worker_user:
        if not _has_effective(_CAP_SETUID):
            raise PrivilegeDropFailed("running as root without CAP_SETUID: cannot switch user")
        uid, gid = _switch_user(worker_user)
        _prctl(libc, _PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")
        if os.getppid() != parent_pid:  # the supervisor died while we switched
            os._exit(1)
    _clear_capability_sets(libc)
    status = _status()
    left = {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb") if int(status[k], 16)}
    if left or status.get("NoNewPrivs") != "1":
        raise PrivilegeDropFailed(f"privileges left after dropping: {left or status}")
    if os.geteuid() == 0 and worker_user:
        raise PrivilegeDropFailed("still uid 0 after switching user")
    return Dropped(
        uid=uid,
        gid=gid,
        user=user,
        bounding_set_cleared=bounding_cleared,
    )
