"""The mypyc build (tools/build_native.py): what it compiles imports from the extension, and a
stale extension is detected instead of silently shadowing its edited source."""

from __future__ import annotations

import ast
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


def _awaits_while_handling(source: str) -> list[str]:
    """Places in ``source`` where a compiled coroutine would yield with an exception in flight."""
    tree = ast.parse((build_native.ROOT / source).read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith):
            found.append(f"{source}:{node.lineno}: async with")
        blocks: list[list[ast.stmt]] = []
        if isinstance(node, ast.Try | ast.TryStar):
            blocks.append(node.finalbody)
        if isinstance(node, ast.ExceptHandler):
            blocks.append(node.body)
        for block in blocks:
            for stmt in block:
                for inner in ast.walk(stmt):
                    if isinstance(inner, ast.Await | ast.AsyncFor | ast.AsyncWith):
                        found.append(f"{source}:{inner.lineno}: await in except/finally")
    return found


def test_compiled_coroutines_never_await_while_an_exception_is_handled() -> None:
    # A mypyc coroutine that yields there leaks the exception to the next task (see
    # tools/build_native's docstring); it must hold the exception and await outside.
    found = [
        place
        for source in build_native.native_modules()
        for place in _awaits_while_handling(source)
    ]
    assert not found, found


def test_the_await_check_finds_the_pattern() -> None:
    source = "workers/http1/websocket.py"  # interpreted on purpose: nurseries, awaits in finally
    assert source not in build_native.native_modules()
    found = _awaits_while_handling(source)
    assert any("async with" in place for place in found)
    assert any("await in except/finally" in place for place in found)


def test_an_extension_of_a_module_no_longer_compiled_is_reported_and_cleaned() -> None:
    source = "workers/http1/serve.py"  # interpreted on purpose
    orphan = (build_native.ROOT / source).with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0])
    orphan.write_bytes(b"")
    try:
        assert orphan in build_native.orphan_extensions()
        assert str(orphan.relative_to(build_native.ROOT)) in build_native.stale_extensions()
    finally:
        orphan.unlink(missing_ok=True)
    assert orphan not in build_native.orphan_extensions()
