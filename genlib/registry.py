"""Name -> object registries with helpful errors.

Models, datasets, samplers, noise schedules, KL schedules and metrics register here by name with a
decorator. Looking up an unknown name raises `UnknownNameError` listing the valid names and the
closest match. This module knows nothing about what it stores.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


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

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            doc = help if help is not None else (getattr(obj, "__doc__", None) or "")
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            return obj

        return decorate

    def get(self, name: str) -> T:
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

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
