"""The shared connection-ID table of QUIC passthrough listeners: a BPF LRU hash map.

Owns creating the map (layout from gateway/passthrough/cid_record.py) and copying the
live entries of one map into a bigger or smaller one (a reload that changes
`max_routes`). The supervisor keeps the fd and passes it to every worker of every
generation, so routes outlive a generation; workers read and write it by fd without
any capability (workers/cid_store.py). The map is not attached to any program and not
pinned: it lives as long as a process holds its fd.
Must never: touch sockets, or keep an fd it was not asked to keep.
"""

from __future__ import annotations

from gateway.passthrough.cid_record import KEY_BYTES, VALUE_BYTES
from kernel.libbpf import BPF_ANY, BPF_MAP_TYPE_LRU_HASH, check, ffi, lib, log_mark


def create_cid_map(max_entries: int, name: str = "gw_quic_cids") -> int:
    """A new, empty LRU hash map of `max_entries` routes; returns its fd (BpfError)."""
    mark = log_mark()
    return check(
        int(
            lib.bpf_map_create(
                BPF_MAP_TYPE_LRU_HASH,
                name.encode()[:15],
                KEY_BYTES,
                VALUE_BYTES,
                max_entries,
                ffi.NULL,
            )
        ),
        "bpf_map_create(cid table)",
        mark,
    )


def copy_entries(src_fd: int, dst_fd: int, limit: int) -> int:
    """Copy up to `limit` entries from src to dst; returns how many were copied."""
    key = ffi.new(f"unsigned char[{KEY_BYTES}]")
    nxt = ffi.new(f"unsigned char[{KEY_BYTES}]")
    value = ffi.new(f"unsigned char[{VALUE_BYTES}]")
    copied = 0
    prev = ffi.NULL
    while copied < limit:
        if lib.bpf_map_get_next_key(src_fd, prev, nxt) != 0:
            break  # ENOENT: the end
        ffi.memmove(key, nxt, KEY_BYTES)
        prev = key
        if lib.bpf_map_lookup_elem(src_fd, key, value) != 0:
            continue  # evicted meanwhile
        if lib.bpf_map_update_elem(dst_fd, key, value, BPF_ANY) == 0:
            copied += 1
    return copied
