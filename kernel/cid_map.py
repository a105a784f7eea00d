"""The shared tables of QUIC passthrough listeners: BPF LRU hash maps.

Owns creating the maps (layouts from gateway/passthrough/cid_record.py, the connection-ID
routes, and flow_record.py, the flows' local ports) and copying the live entries of one
map into a bigger or smaller one (a reload that changes `max_routes`). The supervisor
keeps the fds and passes them to every worker of every generation, so the tables outlive
a generation; workers read and write them by fd without any capability
(workers/bpf_map.py). The maps are attached to no program and not pinned: they live as
long as a process holds an fd.
Must never: touch sockets, or keep an fd it was not asked to keep.
"""

from __future__ import annotations

from gateway.passthrough import cid_record, flow_record
from kernel.libbpf import BPF_ANY, BPF_MAP_TYPE_LRU_HASH, check, ffi, lib, log_mark

SHAPES = {
    "routes": (cid_record.KEY_BYTES, cid_record.VALUE_BYTES),
    "flows": (flow_record.KEY_BYTES, flow_record.VALUE_BYTES),
}


def create_table(kind: str, max_entries: int) -> int:
    """A new, empty LRU hash map for `kind` ("routes" | "flows"); its fd (BpfError)."""
    key_bytes, value_bytes = SHAPES[kind]
    mark = log_mark()
    fd = lib.bpf_map_create(
        BPF_MAP_TYPE_LRU_HASH,
        f"gw_quic_{kind}".encode(),
        key_bytes,
        value_bytes,
        max_entries,
        ffi.NULL,
    )
    return check(int(fd), f"bpf_map_create(quic {kind})", mark)


def copy_entries(kind: str, src_fd: int, dst_fd: int, limit: int) -> int:
    """Copy up to `limit` entries from src to dst; returns how many were copied."""
    key_bytes, value_bytes = SHAPES[kind]
    key = ffi.new(f"unsigned char[{key_bytes}]")
    nxt = ffi.new(f"unsigned char[{key_bytes}]")
    value = ffi.new(f"unsigned char[{value_bytes}]")
    copied = 0
    prev = ffi.NULL
    while copied < limit:
        if lib.bpf_map_get_next_key(src_fd, prev, nxt) != 0:
            break  # ENOENT: the end
        ffi.memmove(key, nxt, key_bytes)
        prev = key
        if lib.bpf_map_lookup_elem(src_fd, key, value) != 0:
            continue  # evicted meanwhile
        if lib.bpf_map_update_elem(dst_fd, key, value, BPF_ANY) == 0:
            copied += 1
    return copied
