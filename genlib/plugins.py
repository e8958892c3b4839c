"""Plugins: a user's own package registers model families, samplers, metrics, datasets and timing backends.

A plugin is a module whose import registers entries in genbench's registries (`MODELS`, `SAMPLERS`,
`METRICS`, `DATASETS`, `BACKENDS`, ...). It is found either through the `genbench.plugins` entry-point group
of an installed distribution, or by module name from `genbench --plugin MODULE` and the GENBENCH_PLUGINS
environment variable (comma-separated), which the option sets so that spawned grid workers load the same
plugins. Loading is lazy: the first registry lookup or listing imports them (`genbench --help` imports none).
This module only imports; what a plugin registers is validated by the registries themselves.

    # the plugin's pyproject.toml
    [project.entry-points."genbench.plugins"]
    mine = "my_package.genbench_plugin"       # a module (its import registers), or a module:function to call
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Iterable

from genlib import registry

GROUP = "genbench.plugins"
ENV_VAR = "GENBENCH_PLUGINS"


class PluginError(Exception):
    """A plugin that cannot be loaded; the message names the plugin and where it was declared, in one line."""


@dataclass(frozen=True)
class Plugin:
    """One loaded plugin: its name (entry-point name, or module name) and where it was declared."""

    name: str
    target: str  # "package.module" or "package.module:function"
    source: str  # "entry point genbench.plugins: name = target (distribution 1.0)" or "--plugin / GENBENCH_PLUGINS"


_loaded: dict[str, Plugin] = {}  # by target, in load order
_failed: dict[str, PluginError] = {}  # by target: raised again on every later load, never silently skipped
_entry_points_done = False
_lock = threading.RLock()
_loading = threading.local()


def env_modules() -> list[str]:
    """The module names listed in GENBENCH_PLUGINS (comma-separated; blanks ignored)."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def request_modules(modules: Iterable[str]) -> list[str]:
    """Add `modules` to GENBENCH_PLUGINS (keeping its order, without repeats) so that processes started from
    now on (grid workers) load them too; returns the resulting list."""
    merged = list(dict.fromkeys([*env_modules(), *(m.strip() for m in modules if m.strip())]))
    if merged:
        os.environ[ENV_VAR] = ",".join(merged)
    return merged


def _entry_points() -> list[metadata.EntryPoint]:
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):  # a distribution on sys.path twice lists its entry twice
        seen.setdefault(ep.value, ep)
    return sorted(seen.values(), key=lambda ep: ep.name)


def _describe(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" ({dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {GROUP}: {ep.name} = {ep.value}{where}"


def _importing_genbench() -> bool:
    """Whether a genbench module is half-imported now (genlib.metrics looks families up at import). A plugin
    imports genbench, so loading it then would hand it a partially initialised module: such a lookup
    leaves loading to the next one."""
    return any(name.split(".")[0] in registry.GENBENCH_PACKAGES
               and getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()))


def _load_one(name: str, target: str, source: str) -> None:
    if target in _loaded:
        return
    if target in _failed:
        raise _failed[target]
    module_name, _, attr = target.partition(":")
    try:
        with registry.registering_for(name):
            obj = import_module(module_name.strip())
            for part in filter(None, attr.strip().split(".")):
                obj = getattr(obj, part)
            if attr and callable(obj):
                obj()
    except Exception as exc:  # noqa: BLE001: any failure of user code becomes one named line
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.strip() and ":" not in target \
                and source.startswith("--plugin"):
            reason += " (is its directory on PYTHONPATH?)"
        error = PluginError(f"plugin '{name}' ({source}) failed to load: {reason}")
        _failed[target] = error
        raise error from None
    _loaded[target] = Plugin(name=name, target=target, source=source)


def load_plugins(modules: Iterable[str] = ()) -> list[Plugin]:
    """Import the installed plugins (entry-point group `genbench.plugins`), the modules in GENBENCH_PLUGINS
    and `modules`, each once; returns every plugin loaded so far. Raises PluginError for one that fails
    (again on every call). Called by the registries before their first lookup, so rarely needed directly."""
    with _lock:
        if getattr(_loading, "active", False):  # a plugin's own import looked something up
            return list(_loaded.values())
        if _importing_genbench():  # the registries ask again on their next lookup
            return list(_loaded.values())
        global _entry_points_done
        _loading.active = True
        try:
            wanted = [(m, m, f"--plugin / {ENV_VAR}") for m in dict.fromkeys([*env_modules(), *modules])]
            if not _entry_points_done:
                _entry_points_done = True
                wanted = [(ep.name, ep.value, _describe(ep)) for ep in _entry_points()] + wanted
            for name, target, source in wanted:  # load the others before reporting a broken one
                try:
                    _load_one(name, target, source)
                except PluginError:
                    pass
            for error in _failed.values():
                raise error
            registry.plugins_loaded()
        finally:
            _loading.active = False
        return list(_loaded.values())


def loaded_plugins() -> list[Plugin]:
    """The plugins loaded so far, in load order."""
    return list(_loaded.values())


__all__ = ["ENV_VAR", "GROUP", "Plugin", "PluginError", "env_modules", "load_plugins", "loaded_plugins",
           "request_modules"]
