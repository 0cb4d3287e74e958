"""Typed dataclass configs <-> plain dicts and YAML, with `key=value` overrides and clear errors."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from hifa.errors import ConfigError


def shorten(value: Any, limit: int = 60) -> str:
    """repr() of a config value, cut so that an error stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"

T = TypeVar("T")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def to_dict(config: Any) -> dict:
    """A dataclass tree as plain dicts, lists and scalars (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from a dict, coercing values by annotation; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    unknown = sorted((key for key in data if key not in fields), key=str)  # YAML keys may be numbers or booleans
    if unknown:
        key = unknown[0]
        shown = key if isinstance(key, str) and key and key.strip() == key and key.isprintable() else repr(key)
        raise ConfigError(prefix + shown, f"unknown key; valid keys here: {', '.join(sorted(fields))}")
    values = {name: coerce(data[name], hints[name], prefix + name) for name in data}
    try:
        return cls(**values)
    except ConfigError as exc:
        # A nested section validates itself without knowing where it sits: name the full key.
        if prefix and not exc.key.startswith(prefix):
            raise ConfigError(prefix + exc.key.rsplit(".", 1)[-1], exc.message) from None
        raise


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(key, f"cannot use {shorten(value)} here ({'; '.join(e.split(': ', 1)[-1] for e in errors)})")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(key, f"must be one of {', '.join(repr(a) for a in args)}; got {shorten(value)}")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or (args and args[-1] is not Ellipsis and len(items) != len(args)):
            raise ConfigError(key, f"expected {len(args)} values, got {shorten(value)}")
        kinds = [args[0]] * len(items) if args and args[-1] is Ellipsis else list(args)
        return tuple(coerce(v, k, key) for v, k in zip(items, kinds))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(key, f"expected true or false, got {shorten(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {shorten(value)}")
    if annotation is float:
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise ConfigError(key, f"expected a number, got {shorten(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(key, f"expected a number, got {shorten(value)}") from None
        if not math.isfinite(number):  # no setting takes NaN or infinity; they would poison training
            raise ConfigError(key, f"expected a finite number, got {shorten(value)}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(key, f"expected text, got {'null' if value is None else type(value).__name__}")
        return str(value)
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars) to a nested dict copy."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override looks like key.subkey=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if part in node and not isinstance(node[part], dict):  # e.g. a config file's `renderer: null`
                raise ConfigError(".".join(parts[: depth + 1]), f"holds {node[part]!r}, not a section of keys, so '{key}' names nothing")
            if part not in node:
                raise ConfigError(".".join(parts[: depth + 1]), "unknown key (not a section)")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(key, f"unknown key; valid keys here: {', '.join(sorted(node))}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # A text setting keeps the text as typed: `--set prompt=yes` is 'yes', not True.
        node[parts[-1]] = raw if isinstance(node[parts[-1]], str) and not isinstance(value, str) else value
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: the keys written here override the merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                break  # SafeLoader's own error says so
            key = (type(key), key)  # 1 and true are equal in Python, not in YAML
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key[1]!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with one-line errors for missing or malformed files."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(str(path), "is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {exc.start}); a config file is YAML text") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc.strerror or exc.__class__.__name__}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc).strip().splitlines()[0]
        raise ConfigError(str(path), f"malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping of keys")
    return data


def dump_yaml(config: Any) -> str:
    """YAML text of a dataclass tree."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts to dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(old: dict, new: dict) -> tuple[dict, dict, list[str]]:
    """(flat old, flat new, sorted dotted keys whose values differ) of two nested config dicts."""
    old, new = flatten(old), flatten(new)
    return old, new, sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


# Settings that change how a run is tracked or meshed, not what it trains: a resumed run, or its saved weights, may
# differ in them.
UNTRAINED = ("tracking", "mesh")


def trained_changes(old: dict, new: dict) -> list[str]:
    """Sorted dotted keys where two nested config dicts differ in what they train (UNTRAINED sections aside)."""
    drop = lambda tree: {k: v for k, v in tree.items() if k not in UNTRAINED}  # noqa: E731
    return changed_keys(drop(old), drop(new))[2]
