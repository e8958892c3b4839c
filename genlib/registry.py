"""Name -> object registries with helpful errors.

Models, datasets, samplers, noise schedules, KL schedules and metrics register here by name with a
decorator. Looking up an unknown name raises `UnknownNameError` listing the valid names and the
closest match. The first lookup or listing of any registry loads the plugins (`genlib.plugins`), so a
user's package can register entries without an edit here; each entry remembers the plugin that
registered it. This module knows nothing about what it stores.
"""
from __future__ import annotations

import contextlib
import difflib
import sys
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

GENBENCH_PACKAGES = ("genlib", "bench", "ablations", "reports")  # genbench's own top-level packages
_plugins_ready = False  # set by genlib.plugins once the installed and requested plugins are imported
_origins: list[str] = []  # the plugin whose import is registering entries right now (innermost last)


def _load_plugins() -> None:
    if not _plugins_ready:
        from genlib.plugins import load_plugins  # lazy: keeps importing a registry free of entry-point scans

        load_plugins()


def plugins_loaded() -> None:
    """Called by `genlib.plugins.load_plugins` when every plugin is imported: lookups stop asking for them."""
    global _plugins_ready
    _plugins_ready = True


def _registering_plugin() -> str | None:
    """The plugin loading now, unless the registration comes from a genbench module being imported on the
    way (a plugin's `import genlib.models` registers the shipped families): the innermost module-level frame
    on the stack decides. None outside plugin loading."""
    if not _origins:
        return None
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return None if module.split(".")[0] in GENBENCH_PACKAGES else _origins[-1]


@contextlib.contextmanager
def registering_for(plugin: str) -> Iterator[None]:
    """Attribute the entries registered inside this block to `plugin` (see `Registry.origin`)."""
    _origins.append(plugin)
    try:
        yield
    finally:
        _origins.pop()


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return " did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid names and a suggestion."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text.
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of things (classes, functions) registered with `@registry.register(name)`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            doc = help if help is not None else (getattr(obj, "__doc__", None) or "")
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            plugin = _registering_plugin()
            if plugin is not None:
                self._origin[name] = plugin
            return obj

        return decorate

    def get(self, name: str) -> T:
        _load_plugins()
        try:
            return self._items[name]
        except KeyError:
            names = sorted(self._items)
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{suggest(name, names)} (known: {', '.join(names)})"
            ) from None

    def describe(self, name: str) -> str:
        self.get(name)
        return self._help[name]

    def origin(self, name: str) -> str | None:
        """The plugin that registered `name`, or None for genbench's own entries (and ones registered
        by code imported outside plugin loading)."""
        self.get(name)
        return self._origin.get(name)

    def names(self) -> list[str]:
        _load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        _load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        _load_plugins()
        return len(self._items)
