"""Configs: frozen dataclasses <-> plain dicts <-> YAML, dotted overrides and run keys.

Every config in genbench is a `@dataclass(frozen=True, kw_only=True)` living beside the code it
configures. This module converts them from untrusted YAML (safe loading only, duplicate keys refused)
with type checks and did-you-mean errors, applies `a.b.c=value` overrides (one grammar for the CLI and grid axes) and
hashes the canonical resolved form into a run key. It does not know any concrete config.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from genlib.registry import suggest

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the dotted key and what was expected."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check/convert one YAML value against an annotation; raise ConfigError naming `path`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{path}': {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        hint = suggest(str(value), [str(c) for c in choices])
        raise ConfigError(f"'{path}' must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"'{path}' must have {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{path}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{path}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{path}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{path}' must be a string, got {value!r}")
    raise ConfigError(f"'{path}': unsupported config type {tp!r}")


def from_dict(cls: type[C], data: Any, path: str = "") -> C:
    """Build config `cls` from a nested dict, rejecting unknown keys with a did-you-mean.

    A config class may define `resolve_variant(data) -> subclass` (a classmethod) to pick a subclass
    by a discriminator key such as `model.family`.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{path or '<root>'}' must be a mapping of keys to values, got {data!r}")
    resolve = getattr(cls, "resolve_variant", None)
    if resolve is not None:
        cls = resolve(data, path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            # Match the last component only: a shared 'train.' prefix would make any key look close.
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{_join(path, close[0])}'?" if close else ""
            raise ConfigError(f"unknown key '{_join(path, str(key))}'{hint}"
                              f" (valid keys here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing required key '{_join(path, name)}' ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"'{path or '<root>'}': {exc}") from None


# Field metadata: a field added after results were stored, left out of the plain form (and so of run keys)
# while it holds its default, so that configs which do not use it keep the keys they always had.
OMIT_DEFAULT = "genbench_omit_default"


def to_dict(cfg: Any) -> Any:
    """The plain (YAML/JSON-able) form of a config, every field resolved, tuples as lists (a field marked
    OMIT_DEFAULT is left out while it holds its default)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.init and not (f.metadata.get(OMIT_DEFAULT) and getattr(cfg, f.name) == f.default)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


# The most nodes a YAML document may hold once its aliases are expanded. Aliases let a small file describe an
# exponentially large value ("billion laughs": 9 levels of 10 aliases, 10^9 items); anything that walks the
# value (copies, error messages, hashing) would expand it, so it is refused before it is built.
MAX_YAML_NODES = 1_000_000


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, counted in time linear in its distinct nodes (stops
    counting past MAX_YAML_NODES)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if children_done:
            sizes[id(node)] = min(MAX_YAML_NODES + 1, 1 + sum(sizes.get(id(k), 0) for k in kids))
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


# libyaml's parser when PyYAML has it (the same safe construction, parsing in C); PyYAML's own otherwise.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The largest YAML text read as a config or grid file: real ones are kilobytes (a grid at its cell limit is
# ~150 kB), and a larger one is refused before it is parsed.
MAX_YAML_BYTES = 4 * 2**20


class _UniqueKeyLoader(_SafeLoader):
    """A safe YAML loader that refuses a mapping with a repeated key (safe_load silently keeps the last) and a
    document that expands past MAX_YAML_NODES nodes through aliases."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_nodes(node) > MAX_YAML_NODES:
            raise ConfigError(f"the YAML expands to more than {MAX_YAML_NODES:,} values (through its aliases, "
                              "'&anchor' / '*anchor', when the file is small); refused before building it")
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise ConfigError(f"duplicate key {key!r} at line {line} (first at line {first}); "
                                      f"a key may appear once per mapping")
                seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML like `yaml.safe_load`, but a repeated mapping key is a ConfigError naming it and its line."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_override(text: str) -> tuple[str, Any]:
    """Split `a.b=value`; the value is parsed as YAML (so 8 is an int, [64, 64] a list, null None)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"override {text!r}: {exc}") from None
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> dict:
    """Return a copy of nested dict `data` with `key` (dotted) set to `value`."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    node = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{'.'.join(parts[: i + 1])}' is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value
    return out


def apply_overrides(data: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Apply dotted overrides (`["model.latent_dim=8"]` or `{"model.latent_dim": 8}`) to a dict."""
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        data = set_dotted(data, key, value)
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely (duplicate keys are errors); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"config file '{path}' is {size / 2**20:.1f} MiB; a run config or grid file may be at most "
                          f"{MAX_YAML_BYTES / 2**20:g} MiB (a grid plans at most 20,000 cells: split a longer axis "
                          "into several studies)")
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"config file '{path}': {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must contain a mapping at the top level")
    return data


def canonical_json(cfg: Any) -> str:
    """Sorted-key compact JSON of a config (dataclass or dict): the form run keys are hashed from."""
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Run key: the first `length` hex digits of sha256 over the canonical resolved config."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:length]


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
