"""Services a run context carries (GPIO banks, pin factories, model registries, ...), by type.

The kernel knows no service by name: a package defines its service class and finds its instance in
the run context with ``ctx.services.get(GpioBanks)``, created on first use for that context. Two
agents (or a test and a rig) in one process thus never share hidden state through module globals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Services:
    """A small typed container: one instance per service class, made on first use."""

    def __init__(self, *instances: object) -> None:
        """Start with ``instances`` already provided (a test's mock pin factory, for example)."""
        self._items: dict[type, Any] = {type(i): i for i in instances}
        self._lock = threading.Lock()

    def get(self, cls: type[T], factory: Callable[[], T] | None = None) -> T:
        """The instance of ``cls``, made by ``factory`` (default ``cls()``) the first time."""
        with self._lock:
            item = self._items.get(cls)
            if item is None:
                item = (factory or cls)()
                self._items[cls] = item
            return item

    def provide(self, instance: object, as_type: type | None = None) -> None:
        """Put ``instance`` in (replacing any of the same type)."""
        with self._lock:
            self._items[as_type or type(instance)] = instance

    def find(self, cls: type[T]) -> T | None:
        """The instance of ``cls`` if one was made or provided, else None."""
        with self._lock:
            return self._items.get(cls)
