"""Fixtures for the kernel datapath tests: built objects, a datapath with unique pins,
and a pair of network namespaces joined by a veth (all removed even on failure)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_netns import Veth

from kernel import build
from kernel.datapath import Datapath

TEST_PIN_ROOT = Path("/sys/fs/bpf/expressgateway-test")


@pytest.fixture(scope="session")
def obj_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpf")
    build.build(out)
    return out


@pytest.fixture
def pin_root() -> Iterator[Path]:
    root = TEST_PIN_ROOT / uuid.uuid4().hex[:8]
    yield root
    if root.exists():
        shutil.rmtree(root)  # bpffs supports unlink/rmdir of pins
    try:
        TEST_PIN_ROOT.rmdir()  # only when empty: another test process may be using it
    except OSError:
        pass


@pytest.fixture
def datapath(obj_dir: Path, pin_root: Path) -> Iterator[Datapath]:
    dp = Datapath.open("t", obj_dir, pin_root=pin_root, hash_seed=0x5EED, trace=True)
    try:
        yield dp
    finally:
        dp.close(unload=True)


@pytest.fixture
def veth() -> Iterator[Veth]:
    v = Veth()
    try:
        v.up()
        yield v
    finally:
        v.down()
