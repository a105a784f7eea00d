"""Run a loaded XDP program on one crafted packet through BPF_PROG_TEST_RUN.

Owns: the bpf_prog_test_run_opts call and its verdict names.
Must never: attach anything; it is for tests and diagnostics (no traffic involved).
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.libbpf import check, ffi, lib

XDP_VERDICTS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}


@dataclass(frozen=True)
class TestRun:
    verdict: str
    duration_ns: int


def run_xdp(prog_fd: int, packet: bytes, repeat: int = 1) -> TestRun:
    """Run the program `repeat` times on packet; the verdict of the last run."""
    data_in = ffi.new("char[]", packet)
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    opts.data_in = data_in
    opts.data_size_in = len(packet)
    opts.repeat = repeat
    check(lib.bpf_prog_test_run_opts(prog_fd, opts), "bpf_prog_test_run")
    return TestRun(XDP_VERDICTS.get(int(opts.retval), str(int(opts.retval))), int(opts.duration))
