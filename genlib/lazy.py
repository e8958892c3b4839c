"""Lazy package exports (PEP 562): a package maps each exported name to the module defining it, and a name
is imported on first use, so building the command line (`genbench --help`) imports no torch or pandas.

    __getattr__, __dir__ = lazy_exports(globals(), {"evaluate": "genlib.metrics.evaluate"}, __all__)
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str], names: Sequence[str], *,
                 first: str | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's (`__getattr__`, `__dir__`): a name in `exports` is imported from its module on first
    use and bound in `namespace` (the package's globals), so later reads skip the hook. `first`: a module
    imported before any export (e.g. one whose import registers what the exports read)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if first is not None:
            importlib.import_module(first)
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
