"""cffi ABI-mode bindings to libbpf.so.1 and the typed error every kernel call raises.

Owns: the C declarations we call, errno translation (`BpfError`), and capture of libbpf's
log (verifier messages included) so an error carries the lines that explain it.
Must never: hold policy or state beyond the log buffer; higher layers decide what to call.
"""

from __future__ import annotations

import collections
import errno as errno_mod
import os
from typing import Any

import cffi

CDEF = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
struct bpf_object; struct bpf_map; struct bpf_program; struct bpf_object_open_opts;
enum libbpf_print_level { LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG };
typedef int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, void *);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
int libbpf_num_possible_cpus(void);
int libbpf_probe_bpf_map_type(int map_type, const void *opts);
int libbpf_probe_bpf_prog_type(int prog_type, const void *opts);

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *o);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
const char *bpf_map__pin_path(const struct bpf_map *map);
bool bpf_map__is_pinned(const struct bpf_map *map);
int bpf_map__unpin(struct bpf_map *map, const char *path);
void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);

const char *bpf_program__name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);

int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);

struct bpf_link_create_opts { size_t sz; __u32 flags; void *iter_info; __u32 iter_info_len;
    __u32 target_btf_id; __u64 union_words[4]; };
int bpf_link_create(int prog_fd, int target_fd, int attach_type,
                    const struct bpf_link_create_opts *opts);
struct bpf_link_update_opts { size_t sz; __u32 flags; __u32 old_prog_fd; };
int bpf_link_update(int link_fd, int new_prog_fd, const struct bpf_link_update_opts *opts);
int bpf_link_detach(int link_fd);

struct bpf_test_run_opts { size_t sz; const void *data_in; void *data_out; __u32 data_size_in;
    __u32 data_size_out; const void *ctx_in; void *ctx_out; __u32 ctx_size_in;
    __u32 ctx_size_out; __u32 retval; int repeat; __u32 duration; __u32 flags; __u32 cpu;
    __u32 batch_size; };
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

struct bpf_xdp_query_opts { size_t sz; __u32 prog_id; __u32 drv_prog_id; __u32 hw_prog_id;
    __u32 skb_prog_id; __u8 attach_mode; };
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);
int bpf_prog_load(int prog_type, const char *prog_name, const char *license,
                  const void *insns, size_t insn_cnt, const void *opts);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);
int bpf_map_create(int map_type, const char *map_name, __u32 key_size, __u32 value_size,
                   __u32 max_entries, const void *opts);
"""

LIBC_CDEF = "int vsnprintf(char *str, size_t size, const char *format, void *ap);"

# UAPI numbers (linux/bpf.h, linux/if_link.h) the layers above use.
BPF_XDP = 37
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_SK_REUSEPORT = 21
BPF_MAP_TYPE_CPUMAP = 16
BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_ANY = 0
BPF_NOEXIST = 1
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB = 0, 1, 2

ffi = cffi.FFI()
ffi.cdef(CDEF)
ffi.cdef(LIBC_CDEF)

_LOG_LINES = 400
_log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
_log_serial = 0


class BpfError(OSError):
    """A libbpf/kernel call failed: errno, the operation, and libbpf's log lines meanwhile."""

    def __init__(self, err: int, op: str, log: tuple[str, ...] = ()) -> None:
        self.op = op
        self.log = log
        tail = ("\n  " + "\n  ".join(log[-12:])) if log else ""
        super().__init__(err, f"{op}: {os.strerror(err)}{tail}")


class LibbpfUnavailable(RuntimeError):
    """libbpf.so.1 cannot be loaded on this machine."""


class _Lib:
    """Lazily dlopen'd libbpf + libc, with the print callback installed once."""

    def __init__(self) -> None:
        self._lib: Any = None
        self._libc: Any = None
        self._cb: Any = None

    def _open(self) -> Any:
        try:
            lib = ffi.dlopen("libbpf.so.1")
        except OSError as exc:
            raise LibbpfUnavailable(str(exc)) from exc
        self._libc = ffi.dlopen(None)
        buf = ffi.new("char[]", 2048)

        @ffi.callback("int(enum libbpf_print_level, const char *, void *)")
        def _print(level: int, fmt: Any, ap: Any) -> int:
            # va_list is an array type on x86_64, so it arrives as a pointer (notes §4.8).
            global _log_serial
            n = self._libc.vsnprintf(buf, 2048, fmt, ap)
            if n > 0 and level != 2:
                for line in ffi.string(buf).decode("utf-8", "replace").splitlines():
                    _log.append(line)
                    _log_serial += 1
            return 0

        self._cb = _print
        lib.libbpf_set_print(_print)
        self._lib = lib
        return lib

    def __getattr__(self, name: str) -> Any:
        lib = self._lib if self._lib is not None else self._open()
        return getattr(lib, name)


lib = _Lib()


def log_mark() -> int:
    """A position in the log; pass it to `log_since` to collect lines logged after it."""
    return _log_serial


def log_since(mark: int) -> tuple[str, ...]:
    count = min(_log_serial - mark, len(_log))
    return tuple(list(_log)[len(_log) - count :]) if count > 0 else ()


def check(ret: int, op: str, mark: int | None = None) -> int:
    """Translate libbpf's `-errno` int convention into BpfError; returns ret when >= 0."""
    if ret < 0:
        raise BpfError(-ret, op, log_since(mark) if mark is not None else ())
    return ret


def check_ptr(ptr: Any, op: str, mark: int | None = None) -> Any:
    """Translate libbpf's NULL + errno pointer convention into BpfError."""
    if ptr == ffi.NULL:
        err = ffi.errno or errno_mod.EINVAL
        raise BpfError(err, op, log_since(mark) if mark is not None else ())
    return ptr


def version() -> tuple[int, int]:
    return int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())


def possible_cpus() -> int:
    """Per-CPU map width (notes P12: not os.cpu_count())."""
    return check(int(lib.libbpf_num_possible_cpus()), "libbpf_num_possible_cpus")
