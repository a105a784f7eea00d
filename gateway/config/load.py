"""Step 1 of 4: TOML bytes -> frozen `Config` Structs.

Owns parsing and type checking only. Every problem is collected (not only the
first), each named by its key path, the bad value and what is allowed, with the
line number where the TOML text gives it. Never opens files: callers pass bytes.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from typing import Any, Literal, Union

import msgspec

from gateway.config.locate import locate_lines
from gateway.config.schema import Config
from gateway.errors import ConfigError, Problem

_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def load_config(data: bytes, source: str = "") -> Config:
    """Parse and type-check a TOML document; raise ConfigError with every problem."""
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(
            [Problem("<file>", f"config is {len(data)} bytes; at most {_MAX_CONFIG_BYTES}")],
            source,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem("<file>", f"not UTF-8 text: {exc.reason} at byte {exc.start}")], source
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise ConfigError([Problem("<toml>", f"syntax error: {exc}", line)], source) from None
    except RecursionError:
        raise ConfigError([Problem("<toml>", "document nests too deeply")], source) from None
    lines = locate_lines(text)
    problems: list[Problem] = []
    _check(doc, Config, "", problems, lines)
    if problems:
        raise ConfigError(problems, source)
    try:
        return msgspec.convert(doc, Config, strict=True)
    except msgspec.ValidationError as exc:  # pragma: no cover - _check is meant to catch all
        raise ConfigError([Problem("<document>", str(exc))], source) from None


def _toml_error_line(message: str) -> int | None:
    marker = "(at line "
    at = message.find(marker)
    if at < 0:
        return None
    digits = message[at + len(marker) :].split(",", 1)[0]
    return int(digits) if digits.isdigit() else None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _BARE_KEY.fullmatch(key):  # '' or spaces, dots...: quoted, as TOML writes it
        key = json.dumps(key)
    return f"{path}.{key}" if path else key


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) != len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # noqa: UP007 - runtime construction
    return tp, False


def _describe(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    elif origin in (Union, types.UnionType):
        text = " or ".join(_describe(a) for a in typing.get_args(tp))
    elif origin is list:
        (item,) = typing.get_args(tp)
        text = f"a list of {_describe(item)}"
    elif _is_struct(tp):
        text = "a table"
    else:
        text = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}.get(
            tp, getattr(tp, "__name__", str(tp))
        )
    return text + (" (or omitted)" if optional else "")


def _check(value: Any, tp: Any, path: str, problems: list[Problem], lines: dict[str, int]) -> None:
    """Type-check `value` against `tp`, appending a Problem for every mismatch."""
    inner, _optional = _strip_optional(tp)
    if _is_struct(inner):
        if not isinstance(value, dict):
            problems.append(_bad(path, f"must be {_describe(inner)}", value, lines))
            return
        fields = {f.name: f for f in msgspec.structs.fields(inner)}
        for key, item in value.items():
            sub = _join(path, key)
            if key not in fields:
                allowed = ", ".join(sorted(fields))
                problems.append(
                    Problem(sub, f"unknown key; allowed here: {allowed}", lines.get(sub))
                )
                continue
            _check(item, fields[key].type, sub, problems, lines)
        for name, info in fields.items():
            if info.required and name not in value:
                problems.append(
                    Problem(_join(path, name), "is required", lines.get(path) if path else None)
                )
        return
    if typing.get_origin(inner) is list:
        (item_tp,) = typing.get_args(inner)
        if _is_struct(item_tp) or typing.get_origin(item_tp) is list:
            if not isinstance(value, list):
                problems.append(_bad(path, f"must be {_describe(inner)}", value, lines))
                return
            for i, item in enumerate(value):
                _check(item, item_tp, _join(path, i), problems, lines)
            return
    try:
        msgspec.convert(value, tp, strict=True)
    except msgspec.ValidationError:
        problems.append(_bad(path, f"must be {_describe(tp)}", value, lines))


def _bad(path: str, expectation: str, value: Any, lines: dict[str, int]) -> Problem:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return Problem(path, f"{expectation}, got {shown}", lines.get(path))
