"""The mypyc build (tools/build_native.py): what it compiles imports from the extension, and a
stale extension is detected instead of silently shadowing its edited source."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from pathlib import Path

from tools import build_native


def test_every_native_module_imports_from_what_is_on_disk() -> None:
    built = set(build_native.built_extensions())
    for source in build_native.native_modules():
        module = importlib.import_module(source.removesuffix(".py").replace("/", "."))
        loaded = Path(module.__file__ or "")
        if any(ext in built for ext in build_native._extension_paths(source)):
            assert loaded.suffix == ".so", f"{source} is built but imported from {loaded}"
        else:
            assert loaded.suffix == ".py", f"{source} is not built but imported from {loaded}"


def test_excluded_modules_stay_interpreted() -> None:
    # mypyc-compiled exception classes lose their class-level status/kind defaults.
    modules = build_native.native_modules()
    assert "gateway/http/errors.py" not in modules
    assert "gateway/http/admission.py" in modules


def test_a_source_edited_after_the_build_is_reported_stale(tmp_path: Path) -> None:
    source = "gateway/http/admission.py"
    exts = [e for e in build_native._extension_paths(source) if e.exists()]
    src = build_native.ROOT / source
    if exts:
        ext = exts[0]
        before = ext.stat()
        try:
            os.utime(ext, (src.stat().st_mtime - 10, src.stat().st_mtime - 10))
            assert source in build_native.stale_extensions()
        finally:
            os.utime(ext, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert source not in build_native.stale_extensions()
    else:
        # Not built here: a fake extension older than the source is what --check reports.
        fake = src.with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0])
        fake.write_bytes(b"")
        try:
            os.utime(fake, (src.stat().st_mtime - 10, src.stat().st_mtime - 10))
            assert source in build_native.stale_extensions()
        finally:
            fake.unlink()
