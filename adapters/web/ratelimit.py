"""Token buckets per client or per key, in bounded memory, and who the client of a request is.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes one.
An empty bucket means 429 with the seconds until a token is back (the Retry-After). At most
``max_keys`` buckets are tracked: the least recently used is forgotten first (it has refilled
the longest, so forgetting it costs at most one fresh burst). This module does no I/O and must
not: it runs before any database work, on every request it guards.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from core.lru import BoundedCache

Clock = Callable[[], float]


class TokenBuckets:
    """One token bucket per key (a client address, an API key), created on first use."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate, self.burst, self.max_keys, self.clock = rate, float(burst), max_keys, clock
        self._buckets: BoundedCache[str, tuple[float, float]] = BoundedCache(max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.get(key) or (self.burst, now)
        return min(self.burst, tokens + (now - at) * self.rate)

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are in ``key``'s bucket (0.0: now). Takes nothing."""
        missing = cost - self._level(key)
        return max(0.0, missing / self.rate)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens. 0.0 when granted, else the seconds to wait (nothing taken)."""
        level = self._level(key)
        if level < cost:
            return (cost - level) / self.rate
        self._store(key, level - cost)
        return 0.0

    def charge(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens even if that empties the bucket (for what is counted afterwards)."""
        self._store(key, max(0.0, self._level(key) - cost))

    def _store(self, key: str, tokens: float) -> None:
        self._buckets.put(key, (tokens, self.clock()))  # (tokens, at); the oldest key goes


# The limits of the routes, in one place (bot.web may pass others).


def onboarding_requests() -> TokenBuckets:
    """Onboarding requests per client: the page polls its status every 2 s (0.5/s a tab), so
    10/s with a burst of 300 never touches a customer, an office of customers behind one
    address, or a dozen tabs, while a flood is held to 10 lookups a second."""
    return TokenBuckets(rate=10.0, burst=300)


def onboarding_misses() -> TokenBuckets:
    """Unknown links per client: a customer mistypes a link a few times, a guesser thousands.
    30, then one every 10 s: 3,000 wrong tokens get 30 answers of 404 and the rest 429."""
    return TokenBuckets(rate=0.1, burst=30)


def intake_reports() -> TokenBuckets:
    """MSAL error reports per API key: 20/s with a burst of 200 takes a platform-wide outage's
    reports within a minute or two (a reporter that honours Retry-After loses none), and holds
    a runaway reporter to 20 inserts a second."""
    return TokenBuckets(rate=20.0, burst=200)


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1 (RFC 9110 section 10.2.3)."""
    return str(max(1, math.ceil(seconds)))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse trusted proxy entries (addresses or CIDR ranges). Raises ValueError on a bad one."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


class ClientAddress:
    """Who sent a request: the peer address, or with trusted proxies the forwarded client.

    X-Forwarded-For is read only when the peer itself is a trusted proxy, and then from the
    right: the first address that is not a trusted proxy is the client (the entries left of it
    were written by the client and prove nothing). IPv6 clients are counted per /64, the block
    one subscriber usually holds, so rotating through it gains nothing.
    """

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = networks(trusted_proxies)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.trusted)

    def __call__(self, request: web.BaseRequest) -> str:
        peer = _parse(request.remote or "")
        if peer is None:
            return "unknown"
        client = peer
        if self.trusted and self._is_trusted(peer):
            forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
            hops = [h.strip() for h in forwarded.split(",")]
            for hop in reversed(hops):
                address = _parse(hop)
                if address is None:
                    break  # a garbled entry: stop at the last address we could trust
                client = address
                if not self._is_trusted(address):
                    break
        if isinstance(client, ipaddress.IPv6Address):
            if client.ipv4_mapped is not None:
                return str(client.ipv4_mapped)
            return str(ipaddress.IPv6Network((client, 64), strict=False))
        return str(client)


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
