"""From YAML and `key.sub=value` overrides to typed sections: coercion, unknown keys, role-only keys."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from lead_dist.config.schema import STUDENT_ONLY_KEYS, TEACHER_ONLY_KEYS, Config, ConfigError, ModelConfig, closest_hint
from lead_dist.config.validate import validate


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Return `value` as type `hint`, accepting the string forms a command-line override produces."""
    inner, optional = _unwrap_optional(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~") and optional):
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null (expected {getattr(inner, '__name__', inner)})")
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if inner is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if inner is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "5e-5" (no dot) as a string; accept it as the number it obviously is.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if inner is str:
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted `no` (train.mixed_precision=no) as false; give the word back.
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    origin = typing.get_origin(inner)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
            raise ConfigError(f"{key}: expected a list of [student_layer, teacher_layer] pairs, got {value!r}")
        return [[_coerce(f"{key}[{i}]", x, int) for x in pair] for i, pair in enumerate(value)]
    if dataclasses.is_dataclass(inner):
        return _build(inner, value, key)
    raise ConfigError(f"{key}: unsupported type {inner!r}")  # a schema bug, not a user error


def _build(cls: type, raw: Any, prefix: str, *, role: str | None = None) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    allowed = set(names)
    if role == "student":
        allowed -= set(TEACHER_ONLY_KEYS)
    elif role == "teacher":
        allowed -= set(STUDENT_ONLY_KEYS)
    elif role == "model":
        allowed -= set(STUDENT_ONLY_KEYS) | set(TEACHER_ONLY_KEYS)
    if role == "student":
        allowed.discard("candidates")  # the student is scored over the teacher's candidate set
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in allowed:
            if key in names:
                raise ConfigError(f"{full}: not allowed in the {prefix} section (only for {_owner_of(key)})")
            hint_text = closest_hint(str(key), allowed)
            if prefix and "did you mean" in hint_text:
                hint_text = hint_text.replace("mean '", f"mean '{prefix}.")
            raise ConfigError(f"unknown config key {full!r}{hint_text}")
        hint = hints[key]
        inner, _ = _unwrap_optional(hint)
        if inner is ModelConfig:
            kwargs[key] = None if value is None else _build(ModelConfig, value, full, role=key)
        else:
            kwargs[key] = _coerce(full, value, hint)
    return cls(**kwargs)


def _owner_of(key: str) -> str:
    return "the student" if key in STUDENT_ONLY_KEYS else "the teacher"


# ----------------------------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-5` -> (["train", "lr"], value); the value is read as a YAML scalar (so `null`, `true`, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.max_steps=100")
    key, _, value_text = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty part in key {key!r}")
    try:
        value = yaml.load(value_text, Loader=_UniqueKeyLoader) if value_text.strip() else ""  # noqa: S506 (safe)
    except yaml.YAMLError:
        value = value_text
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply dotted overrides to the raw mapping (before typing, so the same coercion and checks apply)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


# ----------------------------------------------------------------------------------------------------------------
# Loading and validation


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key that repeats in one mapping: PyYAML keeps the last silently, so a second
    `train:` section would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key {key!r} repeats the one on line {seen[key]}; merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1, which PyYAML reads, has no float without a dot: `1e-6` would be the string "1e-6", which the typed sections
# coerce but a model's free-form `config:` section would hand to transformers as a string (a traceback in its
# arithmetic). YAML 1.2, and every user, reads it as a number: so do we.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> Any:
    """A YAML file through the safe loader, with repeated keys and bad UTF-8 refused (ConfigError naming the file)."""
    from lead_dist.textfile import NotUtf8Error, read_utf8

    path = Path(path)
    try:
        return yaml.load(read_utf8(path), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except NotUtf8Error as exc:
        raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read YAML (safe loader), apply overrides, build typed sections and validate. Raises ConfigError."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded or {}
    return config_from_dict(apply_overrides(raw, overrides), source=str(path) if path else "<overrides>")


def fill_defaults(config: Config) -> Config:
    """The defaults that depend on other keys, filled in place: a distill run's mode is `lead`; a model section's
    candidate set is `group` for a cross encoder (it scores only the pairs it is given) and `global` otherwise."""
    if config.stage == "distill" and config.mode is None:
        config.mode = "lead"
    for section in (config.student, config.teacher, config.model):
        if section is not None and section.candidates is None:
            section.candidates = "group" if section.kind == "ce" else "global"
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        config = fill_defaults(_build(Config, raw, ""))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config
