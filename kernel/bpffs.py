"""The BPF filesystem: make sure it is mounted, and lay out our pin directories.

Owns: the idempotent bpffs mount (it is not mounted at boot on our machine kind, notes P4)
with an explicit mode (a bpffs mounted without one is 01777, like /tmp: any local user
could create our directory first), the pin path layout
/sys/fs/bpf/expressgateway/<instance>/{maps-v*,links}/, creating those directories 0700,
and the owner/mode check every existing level must pass before its pins are adopted
(owned by us or root, writable by nobody else: otherwise another user could have placed
or swapped the maps we would steer with).
Must never: pin or unpin objects itself (kernel/datapath.py does).
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
PIN_ROOT = BPFFS / "expressgateway"
BPF_FS_MAGIC = 0xCAFE4A11
_INSTANCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def is_bpffs(path: Path) -> bool:
    """True when path lives on a bpf filesystem (statfs f_type == BPF_FS_MAGIC)."""
    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), buf) != 0:
        return False
    f_type = int.from_bytes(buf.raw[:8], "little")
    return f_type == BPF_FS_MAGIC


MOUNT_MODE = 0o700
DIR_MODE = 0o700


class UnsafePinDir(PermissionError):
    """A pin directory another user could have written: its pins are not adopted."""


def ensure_mounted(mountpoint: Path = BPFFS) -> bool:
    """Mount bpffs at mountpoint (mode 0700) unless it is already there; returns True if
    we mounted it."""
    if is_bpffs(mountpoint):
        return False
    mountpoint.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"mode={MOUNT_MODE:o}".encode()
    if libc.mount(b"bpf", str(mountpoint).encode(), b"bpf", 0, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount bpffs at {mountpoint}: {os.strerror(err)}")
    return True


def instance_dir(instance: str, root: Path = PIN_ROOT) -> Path:
    if not _INSTANCE.match(instance):
        raise ValueError(f"instance name {instance!r}: use 1-64 of [A-Za-z0-9_.-]")
    return root / instance


def check_pin_dir(path: Path) -> None:
    """Raise UnsafePinDir unless `path` (if it exists) is a real directory owned by this
    process's uid or root and writable by no one else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePinDir(f"{path} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafePinDir(
            f"{path} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()}) or root: "
            "its pins are not adopted"
        )
    if st.st_mode & 0o022:
        raise UnsafePinDir(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"its pins are not adopted; chmod go-w {path}"
        )


def make_pin_dirs(*paths: Path) -> None:
    """Check every level of `paths` below their mountpoint, from the top (the mountpoint
    itself may be sticky 01777, like /tmp), creating what is missing with mode 0700."""
    for path in paths:
        levels = []
        for level in (path, *path.parents):
            if os.path.ismount(level):
                break
            levels.append(level)
        for level in reversed(levels):
            check_pin_dir(level)
            if not level.exists():
                level.mkdir(mode=DIR_MODE)
