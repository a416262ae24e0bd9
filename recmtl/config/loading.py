"""YAML -> a validated ``Config``: ``base:`` files, dotted overrides, typed construction.

Every mapping is built into its dataclass with type checks: unknown keys, wrong types and
values outside a ``Literal`` choice are ``ConfigError``s that name the key and the file; then
the cross-field rules of ``checks.py`` run. Command-line overrides use dotted keys
(``train.epochs=2``) parsed as YAML scalars.

Example:
    >>> cfg = load_config("configs/smoke.yaml", ["train.epochs=2"])
    >>> cfg.train.epochs
    2
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recmtl.config.checks import check_config
from recmtl.config.schema import Config, to_plain
from recmtl.errors import ConfigError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; anything else is a ``ConfigError``."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML file, applies ``dotted.key=value`` overrides and validates the result."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    raw = _resolve_base(raw, path, seen=(path.resolve(),))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        try:
            parsed = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):  # e.g. 2026-13-01, a date PyYAML cannot build
            parsed = value  # the text itself: the type checks and rules name the key
        set_dotted(raw, key, parsed, str(path))
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """A validated ``Config`` from plain values (what ``Config.to_dict`` returns)."""
    cfg = build_dataclass(Config, raw, source)
    check_config(cfg, source)
    return cfg


def derive(cfg: Config, changes: Mapping[str, Any], source: str = "<derived>") -> Config:
    """A copy of ``cfg`` with ``{"dotted.key": value}`` changes, validated like a loaded file.

    Example:
        >>> from recmtl.config.schema import FeaturesConfig, SparseFeatureConfig, TableConfig
        >>> from recmtl.config.schema import TaskConfig
        >>> cfg = Config("x", FeaturesConfig((TableConfig("t", 10, 4),),
        ...                                  (SparseFeatureConfig("f", "t"),), ()),
        ...              (TaskConfig("ctr", "click"),))
        >>> derive(cfg, {"train.epochs": 3}).train.epochs
        3
        >>> derive(cfg, {"model.arch": "moe"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recmtl.errors.ConfigError: <derived>: key 'model.arch': expected one of \
('shared_bottom', 'mmoe', ...), got 'moe'
    """
    raw = cfg.to_dict()
    for key, value in changes.items():
        set_dotted(raw, key, to_plain(value), source)
    return config_from_dict(raw, source)


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """``raw["a"]["b"] = value`` for ``key="a.b"``, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: key {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def build_dataclass(tp: Any, raw: dict[str, Any], source: str) -> Any:
    """Any frozen config dataclass from a mapping, with this module's type checks and errors."""
    return _build(tp, raw, "", source)


def _resolve_base(raw: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """``base: other.yaml`` (relative to this file): start from that file, then merge this one
    over it (mappings merge key by key, anything else replaces)."""
    if "base" not in raw:
        return raw
    base_path = (path.parent / str(raw.pop("base"))).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: base {base_path} is included in a cycle")
    if not base_path.exists():
        raise ConfigError(f"{path}: key 'base': no such file {base_path}")
    base = read_yaml_mapping(base_path)
    return _merge(_resolve_base(base, base_path, (*seen, base_path)), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(tp: Any, value: Any, key: str, source: str) -> Any:
    where = f"{source}: key {key or '<root>'!r}"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kwargs = {}
        for name, f in fields.items():
            sub = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = _build(hints[name], value[name], sub, source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: key {sub!r} is required")
        return tp(**kwargs)  # type: ignore[operator]
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, key, source)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (inner, _) = typing.get_args(tp)
        return tuple(_build(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 (no dot) as a string
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is str and type(value) is dt.date:
        return value.isoformat()  # PyYAML reads an unquoted 2026-11-01 as a date
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as they are (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
