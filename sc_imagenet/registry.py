"""The one registry helper behind every plug-in point (stages, detectors, foreground sources,
backbones, evaluation methods), with one policy: a name is registered once.

    BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")
    BACKBONES.register("dense-sift", factory)        # or @BACKBONES.decorator("dense-sift")
    BACKBONES["dense-sift"]                          # unknown name: UnknownNameError listing the known ones

A `Registry` is a read-only `Mapping` (`reg[name]`, `name in reg`, `list(reg)`, `.items()`, `len(reg)`)
in registration order. A second registration of a taken name raises `ValueError`, even with the same
object: registration happens at import time, so a repeat means two modules claim one name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")
Obj = TypeVar("Obj")  # the decorated object, returned unchanged


class UnknownNameError(KeyError, ValueError):
    """A name no one registered. A `KeyError` (mapping lookups) and a `ValueError` (bad user input)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Named objects of one kind, in registration order. `kind` names the registry in messages
    (`"unknown backbone 'x'; known: a, b"`, `"backbone 'x' is already registered"`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def check_free(self, name: str) -> None:
        """ValueError if `name` is taken (for callers that validate more before registering)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def register(self, name: str, obj: T) -> T:
        """Add `obj` under `name`; ValueError if the name is taken. Returns `obj`."""
        self.check_free(name)
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[Obj], Obj]:
        """`@reg.decorator(name)`: register the decorated object under `name` and return it unchanged."""

        def deco(obj: Obj) -> Obj:
            self.register(name, obj)  # type: ignore[arg-type]
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Remove and return `name`'s object (tests that register temporary entries clean up with it)."""
        obj = self[name]
        del self._items[name]
        return obj

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
