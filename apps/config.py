"""Typed dataclass configs: YAML presets in ``configs/<command>/`` plus command-line overrides.

Each command's config is a dataclass with a docstring per field. ``geo3d CMD --config NAME|FILE``
loads a preset (a YAML mapping of field names to values) as the defaults, and every other option on
the command line overrides it (parsed by tyro from the dataclass). Unknown keys in a preset are an
error naming the key and the file. This module imports neither torch nor geo3d's heavy parts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A preset cannot be found or does not match its config dataclass."""


def configs_dir() -> Path:
    """Folder of the YAML presets: ``$GEO3D_CONFIGS`` or the repository's ``configs/``."""
    return Path(os.environ.get("GEO3D_CONFIGS", REPO_CONFIGS))


def list_presets(command: str) -> list[str]:
    """Names of the presets shipped for ``command``."""
    folder = configs_dir() / command
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_preset(command: str, name_or_path: str) -> Path:
    """A preset file: an existing path, or ``configs/<command>/<name>.yaml``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = configs_dir() / command / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_presets(command)) or "none"
    raise ConfigError(f"no preset {name_or_path!r} for 'geo3d {command}' (file not found; presets: {known})")


def _coerce(value: Any, hint: Any, what: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Annotated:
        return _coerce(value, args[0], what)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, what)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{what}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{what}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], what) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{what}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, what) for v, a in zip(value, args))
        return [_coerce(v, args[0] if args else Any, what) for v in value]
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, what)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{what}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{what}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{what}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: Any, what: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    values = {key: _coerce(value, hints[key], f"{what}: {key}") for key, value in data.items()}
    return cls(**values)


def load_preset(cls: type[T], path: str | Path) -> T:
    """Read a YAML preset file into ``cls``."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read preset ({exc})") from None
    return from_dict(cls, data, str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML/JSON-friendly values (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def split_config_flag(args: list[str]) -> tuple[str | None, list[str]]:
    """Remove ``--config X`` / ``--config=X`` from ``args``; returns ``(X or None, rest)``."""
    preset, rest, i = None, [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--config":
            if i + 1 >= len(args):
                raise ConfigError("--config needs a preset name or a YAML file")
            preset, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            preset = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return preset, rest


def parse_command_config(command: str, cls: type[T], args: list[str], description: str, *,
                         prog: str | None = None, default_preset: str | None = None) -> T:
    """Parse ``geo3d <command> ...``: optional ``--config`` preset, then CLI overrides via tyro.

    Args:
        command: preset folder under ``configs/`` (``"synth"``, or ``"train/pointnet"`` for a task).
        cls: the config dataclass.
        args: the command-line arguments after the command (and task).
        description: shown by ``--help``.
        prog: program name in usage messages (default ``geo3d <command>``).
        default_preset: preset loaded when ``--config`` is not given, if it exists.
    """
    import tyro

    preset, rest = split_config_flag(args)
    presets = list_presets(command)
    fallback = default_preset if default_preset in presets else None
    if preset is None:
        preset = fallback
    default = load_preset(cls, resolve_preset(command, preset)) if preset else None
    note = ""
    if presets:
        note = f"\n\n--config NAME|FILE loads a YAML preset first (presets: {', '.join(presets)}"
        if default_preset is not None:
            note += f"; without --config: {fallback or 'none'}"
        note += ")."
    return tyro.cli(cls, args=rest, prog=prog or f"geo3d {command}", description=description + note,
                    default=default)
