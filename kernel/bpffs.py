"""The BPF filesystem: make sure it is mounted, and lay out our pin directories.

Owns: the idempotent bpffs mount (it is not mounted at boot on our machine kind, notes P4)
and the pin path layout /sys/fs/bpf/expressgateway/<instance>/{maps,links}/.
Must never: pin or unpin objects itself (kernel/datapath.py does).
"""

from __future__ import annotations

import ctypes
import os
import re
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


def ensure_mounted(mountpoint: Path = BPFFS) -> bool:
    """Mount bpffs at mountpoint unless it is already there; returns True if we mounted it."""
    if is_bpffs(mountpoint):
        return False
    mountpoint.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(mountpoint).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount bpffs at {mountpoint}: {os.strerror(err)}")
    return True


def instance_dir(instance: str, root: Path = PIN_ROOT) -> Path:
    if not _INSTANCE.match(instance):
        raise ValueError(f"instance name {instance!r}: use 1-64 of [A-Za-z0-9_.-]")
    return root / instance
