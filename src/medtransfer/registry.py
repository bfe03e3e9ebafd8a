"""Small named registries: one instance per kind of thing (backbones, strategies, data sources ...).

Registering a name twice raises; looking up an unknown name raises with close matches, e.g.::

    unknown strategy 'gradual_unfreez'; did you mean ['gradual_unfreeze']? available: [...]

Registration happens where the object is defined. A registry names its built-in modules (``builtins=``, module
paths as strings, no folder scanning) and imports them the first time it is asked for a name: one way for every
registry, nothing registered on ``import medtransfer``, and no import from a base module back up to the modules that
register into it (a circle). Extensions register by importing the registry and calling ``register``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medtransfer.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, options: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Close matches of ``name`` among ``options`` (case-insensitive)."""
    lowered = {o.lower(): o for o in options}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


class Registry(Generic[T]):
    """A name → object mapping for one kind of thing.

    Example:
        >>> STRATEGIES = Registry("strategy")
        >>> @STRATEGIES.register("finetune")
        ... class FineTune: ...
        >>> STRATEGIES.get("finetune") is FineTune
        True
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.builtins = builtins  # module paths imported on first lookup; each registers its own objects
        self._items: dict[str, T] = {}
        self._loaded = not builtins

    def _load_builtins(self) -> None:
        """Import the built-in modules once (idempotent; a module that fails to import leaves the registry to
        retry on the next lookup and raises)."""
        if self._loaded:
            return
        self._loaded = True  # set first: a built-in module that looks a name up while registering does not recurse
        try:
            for module in self.builtins:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise :class:`UnknownNameError` with suggestions."""
        self._load_builtins()
        try:
            return self._items[name]
        except KeyError:
            close = suggest(name, self.names())
            hint = f" did you mean {close}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} '{name}';{hint} available: {self.names()}") from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs in name order (built-ins loaded)."""
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._items)
