"""The worker's handle on the shared connection-ID table: a BPF LRU hash map by fd.

Owns the `bpf(2)` calls on a map the supervisor created and passed down (the layout is
gateway/passthrough/cid_record.py). Only BPF_MAP_LOOKUP_ELEM and BPF_MAP_UPDATE_ELEM on
an fd already held: since Linux 6.5 those need no capability (only creating maps and
loading programs do), so a worker that dropped every privilege can still use it. Calls
go straight through ctypes' syscall (one per lookup or write, about a microsecond plus
the call overhead) — workers never import the loader in kernel/.
Must never: create, pin or close maps it did not get, or raise on a failed call (a
failure is a miss, counted by the caller).
"""

from __future__ import annotations

import ctypes
import errno
import platform

from gateway.passthrough.cid_record import (
    KEY_BYTES,
    VALUE_BYTES,
    decode_value,
    encode_key,
    encode_value,
)

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
_BPF_ANY = 0
_BPF_EXIST = 2


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


class BpfCidStore:
    """`SharedCidStore` over one map fd (inherited from the supervisor)."""

    __slots__ = ("_attr", "_attr_size", "_key", "_value", "errors_total", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._key = ctypes.create_string_buffer(KEY_BYTES)
        self._value = ctypes.create_string_buffer(VALUE_BYTES)
        self._attr = _ElemAttr(
            map_fd=fd,
            key=ctypes.addressof(self._key),
            value=ctypes.addressof(self._value),
        )
        self._attr_size = ctypes.sizeof(_ElemAttr)
        self.errors_total = 0

    def _call(self, cmd: int, flags: int) -> int:
        self._attr.flags = flags
        if _syscall(_SYS_BPF, cmd, ctypes.byref(self._attr), self._attr_size) == 0:
            return 0
        return ctypes.get_errno()

    def get(self, cid: bytes) -> tuple[int, float] | None:
        self._key.raw = encode_key(cid)
        err = self._call(_BPF_MAP_LOOKUP_ELEM, 0)
        if err:
            if err != errno.ENOENT:
                self.errors_total += 1
            return None
        backend, seen_ms = decode_value(self._value.raw)
        return backend, seen_ms / 1000

    def put(self, cid: bytes, backend: int, now: float, *, must_exist: bool = False) -> bool:
        self._key.raw = encode_key(cid)
        self._value.raw = encode_value(backend, int(now * 1000))
        err = self._call(_BPF_MAP_UPDATE_ELEM, _BPF_EXIST if must_exist else _BPF_ANY)
        if err and not (must_exist and err == errno.ENOENT):
            self.errors_total += 1
        return err == 0

