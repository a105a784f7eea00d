"""BPF object lifecycle: open a compiled .bpf.o, set rodata and pin paths, load, close.

Owns: the bpf_object handle and the fds of its programs and maps, verifier log capture.
Must never: attach programs or interpret map contents (kernel/datapath.py, kernel/maps.py).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from kernel.libbpf import BpfError, check, check_ptr, ffi, lib, log_mark, log_since

_VERIFIER_LOG_BYTES = 1 << 20


class BpfObject:
    """One opened (and later loaded) BPF object file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        mark = log_mark()
        self._obj: Any = check_ptr(
            lib.bpf_object__open_file(str(path).encode(), ffi.NULL), f"open {path}", mark
        )
        self._log_bufs: list[Any] = []
        self.loaded = False

    def _map(self, name: str) -> Any:
        m = lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if m == ffi.NULL:
            raise KeyError(f"{self.path.name}: no map {name!r}")
        return m

    def map_names(self) -> list[str]:
        names = []
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            names.append(ffi.string(lib.bpf_map__name(m)).decode())
            m = lib.bpf_object__next_map(self._obj, m)
        return names

    def set_rodata_u32(self, offset_bytes: int, value: int) -> None:
        """Patch a `const volatile __u32` in .rodata before load (offset within .rodata)."""
        if self.loaded:
            raise RuntimeError("rodata can only be set before load")
        m = self._map(".rodata")
        size = ffi.new("size_t *")
        cur = lib.bpf_map__initial_value(m, size)
        data = bytearray(ffi.buffer(cur, size[0]))
        struct.pack_into("=I", data, offset_bytes, value)
        check(lib.bpf_map__set_initial_value(m, bytes(data), len(data)), "set rodata")

    def set_pin_dir(self, pin_dir: Path, names: list[str]) -> None:
        """Pin (or reuse pinned) maps `names` under pin_dir/<name> at load time."""
        for name in names:
            check(
                lib.bpf_map__set_pin_path(self._map(name), str(pin_dir / name).encode()),
                f"set_pin_path {name}",
            )

    def load(self) -> None:
        prog = lib.bpf_object__next_program(self._obj, ffi.NULL)
        while prog != ffi.NULL:
            buf = ffi.new("char[]", _VERIFIER_LOG_BYTES)
            self._log_bufs.append(buf)
            lib.bpf_program__set_log_buf(prog, buf, _VERIFIER_LOG_BYTES)
            prog = lib.bpf_object__next_program(self._obj, prog)
        mark = log_mark()
        ret = lib.bpf_object__load(self._obj)
        if ret < 0:
            verifier = tuple(
                line
                for buf in self._log_bufs
                for line in ffi.string(buf).decode("utf-8", "replace").splitlines()[-20:]
            )
            raise BpfError(-ret, f"load {self.path.name}", log_since(mark) + verifier)
        self._log_bufs.clear()
        self.loaded = True

    def program_fd(self, name: str) -> int:
        prog = lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if prog == ffi.NULL:
            raise KeyError(f"{self.path.name}: no program {name!r}")
        return check(lib.bpf_program__fd(prog), f"program fd {name}")

    def map_fd(self, name: str) -> int:
        return check(lib.bpf_map__fd(self._map(name)), f"map fd {name}")

    def map_shape(self, name: str) -> tuple[int, int, int, int]:
        """(type, key size, value size, max entries) as loaded."""
        m = self._map(name)
        return (
            int(lib.bpf_map__type(m)),
            int(lib.bpf_map__key_size(m)),
            int(lib.bpf_map__value_size(m)),
            int(lib.bpf_map__max_entries(m)),
        )

    def close(self) -> None:
        if self._obj is not None:
            lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
