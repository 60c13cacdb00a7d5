"""The one bounded cache: never more than its size, the least recently used goes first."""

from __future__ import annotations

import pytest

from core.lru import BoundedCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the newest
    cache.put("c", 3)
    assert "b" not in cache and list(cache) == ["a", "c"] and len(cache) == 2


def test_oldest_and_drop_oldest() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    assert cache.oldest() is None
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.oldest() == ("a", 1)
    cache.drop_oldest()
    assert cache.oldest() == ("b", 2)


def test_a_cache_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedCache[str, int](0)
