"""Typed views of BPF maps, with key/value layouts read from kernel/bpf/abi.h.

Owns: the cffi reading of abi.h (`abi`, `ABI_CONSTANTS`), size checks of every map against
the ABI when a view is made, per-CPU value handling, and map iteration.
Must never: decide map contents (that is gateway/steering.py + kernel/reconcile.py).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cffi

from kernel.libbpf import BPF_ANY, BpfError, check, lib, possible_cpus

ABI_HEADER = Path(__file__).resolve().parent / "bpf" / "abi.h"
_DEFINE = re.compile(r"^#define\s+(GW_\w+)\s+(\d+)\s*$")


def _cdef_text(source: str) -> tuple[str, dict[str, int]]:
    """abi.h minus preprocessor lines; integer #defines are returned as constants."""
    constants: dict[str, int] = {}
    lines = []
    for line in source.splitlines():
        if line.lstrip().startswith("#"):
            m = _DEFINE.match(line.strip())
            if m:
                constants[m.group(1)] = int(m.group(2))
            continue
        lines.append(line)
    prelude = "typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;\n"
    prelude += "typedef uint64_t __u64;\n"
    return prelude + "\n".join(lines), constants


abi = cffi.FFI()
_text, ABI_CONSTANTS = _cdef_text(ABI_HEADER.read_text())
abi.cdef(_text)
_abi_names = abi.dlopen(None)  # enum members of abi.h become attributes here


def const(name: str) -> int:
    """An ABI constant: a `#define GW_*` or an enum member of abi.h."""
    if name in ABI_CONSTANTS:
        return ABI_CONSTANTS[name]
    return int(getattr(_abi_names, name))


class MapShapeError(ValueError):
    """A loaded map's key or value size differs from abi.h."""


class MapView:
    """A typed map: `key_type`/`value_type` are abi.h C type names (e.g. "struct gw_trace")."""

    def __init__(
        self, name: str, fd: int, key_type: str, value_type: str, *, percpu: bool = False
    ) -> None:
        self.name, self.fd, self.percpu = name, fd, percpu
        self.key_type, self.value_type = key_type, value_type
        self.ncpus = possible_cpus() if percpu else 1
        # Per-CPU values are rounded up to 8 bytes each in user space (notes P12).
        self._stride = (abi.sizeof(value_type) + 7) // 8 * 8 if percpu else abi.sizeof(value_type)

    def check_shape(self, key_size: int, value_size: int) -> MapView:
        want = (abi.sizeof(self.key_type), abi.sizeof(self.value_type))
        if (key_size, value_size) != want:
            raise MapShapeError(
                f"map {self.name}: kernel key/value {key_size}/{value_size} bytes, "
                f"abi.h {self.key_type}/{self.value_type} {want[0]}/{want[1]}"
            )
        return self

    def _key(self, key: Any) -> Any:
        return abi.new(self.key_type + " *", key)

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        val = abi.new(self.value_type + " *", value)
        check(lib.bpf_map_update_elem(self.fd, self._key(key), val, flags), f"update {self.name}")

    def update_raw(self, key: Any, value_bytes: bytes, flags: int = BPF_ANY) -> None:
        check(
            lib.bpf_map_update_elem(self.fd, self._key(key), value_bytes, flags),
            f"update {self.name}",
        )

    def lookup(self, key: Any) -> Any | None:
        """The value (cdata), or None when the key is absent. Per-CPU maps: a list per CPU."""
        if self.percpu:
            buf = abi.new("char[]", self._stride * self.ncpus)
        else:
            buf = abi.new(self.value_type + " *")
        ret = lib.bpf_map_lookup_elem(self.fd, self._key(key), buf)
        if ret == -errno.ENOENT:
            return None
        check(ret, f"lookup {self.name}")
        if not self.percpu:
            return buf[0]
        return [
            abi.cast(self.value_type + " *", buf + i * self._stride)[0] for i in range(self.ncpus)
        ]

    def delete(self, key: Any) -> bool:
        """Remove key; False when it was not there."""
        ret = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if ret == -errno.ENOENT:
            return False
        check(ret, f"delete {self.name}")
        return True

    def iter_keys(self) -> Iterator[Any]:
        prev: Any = abi.NULL
        nxt = abi.new(self.key_type + " *")
        while True:
            ret = lib.bpf_map_get_next_key(self.fd, prev, nxt)
            if ret == -errno.ENOENT:
                return
            check(ret, f"next key {self.name}")
            yield abi.new(self.key_type + " *", nxt[0])[0]
            prev = abi.new(self.key_type + " *", nxt[0])


__all__ = ["ABI_CONSTANTS", "BpfError", "MapShapeError", "MapView", "abi", "const"]
