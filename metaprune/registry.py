"""One registry idiom for every pluggable name: models, data sets, criteria, schedules,
allocators, search methods, sparse formats and zoo entry kinds.

A :class:`Registry` maps names to objects (classes, factories, functions). Plugins add
themselves with the :meth:`Registry.register` decorator; the engine looks them up with
:meth:`Registry.get` and never imports them::

    CRITERIA = Registry[type[Criterion]]("criterion")

    @CRITERIA.register("group_l2")
    class GroupL2Criterion(Criterion): ...

    CRITERIA.get("grup_l2")   # ConfigError: unknown criterion 'grup_l2'; did you mean 'group_l2'? ...

Names are listed in registration order (built-ins first, in the order their module declares them).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from metaprune.errors import ConfigError, MetapruneError

T = TypeVar("T")
Item = TypeVar("Item")


class Registry(Generic[T]):
    """Named objects of one kind, with did-you-mean errors for unknown names.

    Args:
        kind: what the names denote, singular ("criterion", "search method"); used in messages.
        plural: the plural of ``kind`` in messages (default ``kind + "s"``).
        error: the :class:`MetapruneError` subclass raised for unknown names (default ConfigError).
    """

    def __init__(self, kind: str, *, plural: str | None = None, error: type[MetapruneError] = ConfigError):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[Item], Item]:
        """Decorator adding the decorated object under ``name``; re-registering the same object is a no-op.

        Raises:
            ConfigError: ``name`` is empty or already names another object.
        """

        def decorator(item: Item) -> Item:
            self.add(name, item)  # type: ignore[arg-type]
            return item

        return decorator

    def add(self, name: str, item: T) -> T:
        """Add ``item`` under ``name`` (the non-decorator form of :meth:`register`)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and self._entries[name] is not item:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered; pick another name")
        self._entries[name] = item
        return item

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            ConfigError (or the registry's ``error`` class): unknown name, with the closest
            known name and the full list.
        """
        if name not in self._entries:
            raise self.error(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: object) -> str:
        """The one-line message for an unknown ``name``: a did-you-mean hint and the known names."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.kind} {name!r}; {hint}known {self.plural}: {', '.join(self.names())}"

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs, in registration order."""
        return [(name, self._entries[name]) for name in self.names()]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
