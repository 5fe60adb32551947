"""Loading a TOML config file into a msgspec Struct, with environment overrides.

A bad value names the key and the reason (msgspec's ValidationError path, such
as ``Expected `int`, got `str` - at `$.nats.port```) and the CLI exits non-zero.

Environment overrides: ``<PREFIX>__<KEY>__<SUBKEY>=value`` (double underscore
between levels, case-insensitive keys), for example
``SYNCMESH_EDGE__NATS__SERVERS=nats://10.0.0.1:4222`` or
``SYNCMESH_REGISTRY__DNS__PORT=53``. Values are parsed as TOML values when they
parse (numbers, booleans, arrays such as ``["a","b"]``), else taken as strings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["ConfigError", "load_config", "apply_env_overrides"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key and the reason."""


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _field_type(kind: Any, path: list[str]) -> msgspec.inspect.Type | None:
    """The msgspec type at ``path`` inside the config Struct ``kind`` (None: unknown key)."""
    node: msgspec.inspect.Type = msgspec.inspect.type_info(kind)
    for part in path:
        while isinstance(node, msgspec.inspect.UnionType):
            structs = [t for t in node.types if isinstance(t, msgspec.inspect.StructType)]
            if not structs:
                return None
            node = structs[0]
        if not isinstance(node, msgspec.inspect.StructType):
            return None
        fields = {f.name: f.type for f in node.fields}
        if part not in fields:
            return None
        node = fields[part]
    return node


def _is_text(info: msgspec.inspect.Type | None) -> bool:
    """A field whose value is a string: an override stays the string it is, so a
    password of ``123456`` or ``true`` is never re-typed into a number or a bool."""
    if isinstance(info, msgspec.inspect.StrType):
        return True
    if isinstance(info, msgspec.inspect.LiteralType):
        return all(isinstance(v, str) for v in info.values)
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_is_text(t) for t in info.types) and not any(
            isinstance(
                t,
                (
                    msgspec.inspect.IntType,
                    msgspec.inspect.FloatType,
                    msgspec.inspect.BoolType,
                    msgspec.inspect.ListType,
                ),
            )
            for t in info.types
        )
    return False


def apply_env_overrides(
    data: dict[str, Any], prefix: str, environ: Mapping[str, str], kind: Any = None
) -> dict[str, Any]:
    head = prefix.upper() + "__"
    for name, raw in sorted(environ.items()):
        if not name.upper().startswith(head):
            continue
        path = [p.lower() for p in name[len(head) :].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        text = kind is not None and _is_text(_field_type(kind, path))
        node[path[-1]] = raw if text else _parse_value(raw)
    return data


def load_config(
    path: str | Path | None,
    kind: type[T],
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> T:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    data = apply_env_overrides(data, env_prefix, os.environ if environ is None else environ, kind)
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid config: {exc}") from exc
