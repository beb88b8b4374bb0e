"""Typed dataclass configs: to/from plain dicts, dotted overrides, errors that name the field.

Used for model configs stored beside checkpoints and for training configs (`--set a.b=v`).
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A config field is unknown, mistyped or invalid; the message names the dotted field."""


def to_dict(obj) -> Any:
    """Dataclass tree -> JSON-compatible dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _close_names(name: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _coerce(value, tp, where: str):
    """Convert `value` (from JSON or a string override) to type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_literal(value, where)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a sequence, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return origin(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    as_float = float(value)  # accepts "1e4"
                    if as_float.is_integer():
                        return int(as_float)
                except ValueError:
                    pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    return value


def _parse_literal(text: str, where: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if "," in text:
            return [t.strip() for t in text.split(",") if t.strip()]
        return [text] if text else []


def from_dict(cls, data: dict, where: str = ""):
    """dict -> dataclass `cls`, recursively; unknown or mistyped fields raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config field {path!r}{_close_names(key, names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def override(obj, dotted: str, value: str, where: str = ""):
    """Return a copy of dataclass tree `obj` with field `a.b.c` set from the string `value`."""
    head, _, rest = dotted.partition(".")
    path = f"{where}.{head}" if where else head
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise ConfigError(f"unknown config field {path!r}{_close_names(head, names)}")
    current = getattr(obj, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"config field {path!r} has no sub-fields (asked for {dotted!r})")
        new = override(current, rest, value, path)
    else:
        tp = _hints(type(obj))[head]
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in typing.get_args(tp):
            new = None
        elif isinstance(value, str) and dataclasses.is_dataclass(current):
            raise ConfigError(f"config field {path!r} is a section; set its fields ({path}.x=...)")
        else:
            new = _coerce(value, tp, path)
    return dataclasses.replace(obj, **{head: new})
