"""One small bounded cache: the least recently used entry goes first once it is full.

Used wherever renewbot remembers recent things in memory (seen triggers, shown statuses, verified
tokens, authority metadata, conversation references, reported failures), so none of them grows
without bound. Not thread-safe by itself: a caller shared with threads holds its own lock.
Standard library only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A mapping of at most ``size`` entries; reading or writing an entry makes it the newest."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def oldest(self) -> tuple[K, V] | None:
        return next(iter(self._items.items()), None)

    def drop_oldest(self) -> None:
        if self._items:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)
