"""The worker's handle on a BPF hash map the supervisor created: lookup and update by fd.

Owns the `bpf(2)` calls BPF_MAP_LOOKUP_ELEM and BPF_MAP_UPDATE_ELEM on a map fd the
worker inherited. Since Linux 6.5 these need no capability (only creating maps and
loading programs do), so a worker that dropped every privilege can still use them. Calls
go straight through ctypes' syscall (one per lookup or write, about a microsecond plus
the call overhead) — workers never import the loader in kernel/.
Must never: create, pin or close maps it did not get, or raise on a failed call (a
failure is a miss; `errors_total` counts the unexpected ones).
"""

from __future__ import annotations

import ctypes
import errno
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
BPF_ANY = 0
BPF_EXIST = 2


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]


class BpfHashMap:
    """Fixed-size keys and values by fd; buffers are reused across calls."""

    __slots__ = ("_attr", "_attr_ref", "_attr_size", "_key", "_value", "errors_total", "fd")

    def __init__(self, fd: int, key_bytes: int, value_bytes: int) -> None:
        self.fd = fd
        self._key = ctypes.create_string_buffer(key_bytes)
        self._value = ctypes.create_string_buffer(value_bytes)
        self._attr = _ElemAttr(
            map_fd=fd,
            key=ctypes.addressof(self._key),
            value=ctypes.addressof(self._value),
        )
        self._attr_ref = ctypes.byref(self._attr)
        self._attr_size = ctypes.sizeof(_ElemAttr)
        self.errors_total = 0

    def _call(self, cmd: int, flags: int) -> int:
        self._attr.flags = flags
        if _syscall(_SYS_BPF, cmd, self._attr_ref, self._attr_size) == 0:
            return 0
        return ctypes.get_errno()

    def lookup(self, key: bytes) -> bytes | None:
        self._key.raw = key
        err = self._call(_BPF_MAP_LOOKUP_ELEM, 0)
        if err:
            if err != errno.ENOENT:
                self.errors_total += 1
            return None
        return self._value.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> bool:
        """False if it failed (with BPF_EXIST: also when the key was gone)."""
        self._key.raw = key
        self._value.raw = value
        err = self._call(_BPF_MAP_UPDATE_ELEM, flags)
        if err and not (flags == BPF_EXIST and err == errno.ENOENT):
            self.errors_total += 1
        return err == 0
