"""Token buckets and client addresses: who is limited, when, and for how long."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from adapters.web.ratelimit import (
    ClientAddress,
    TokenBuckets,
    onboarding_misses,
    onboarding_requests,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_customer_polling_for_an_hour_in_three_tabs_is_never_limited() -> None:
    """The page polls every 2 s; three tabs from one office for an hour stay far under the limit."""
    clock = Clock()
    buckets = onboarding_requests()
    buckets.clock = clock
    for _ in range(1800):
        for _tab in range(3):
            assert buckets.take("203.0.113.7") == 0.0
        clock.now += 2.0


def test_three_thousand_wrong_links_are_refused_after_thirty() -> None:
    """Misses are counted per client: 30 answered, then a wait of about 10 s per miss."""
    clock = Clock()
    misses = onboarding_misses()
    misses.clock = clock
    answered = 0
    for _ in range(3000):
        if misses.wait("198.51.100.9") == 0.0:
            answered += 1
            misses.charge("198.51.100.9")
        clock.now += 0.001
    assert answered == 30
    assert 0 < misses.wait("198.51.100.9") <= 10  # 3 s passed: 0.3 of a miss refilled
    assert misses.wait("198.51.100.10") == 0.0  # another client is untouched
    clock.now += 10
    assert misses.wait("198.51.100.9") == 0.0


def test_refused_requests_take_nothing_and_say_how_long_to_wait() -> None:
    """A refusal leaves the bucket as it was; Retry-After is whole seconds, at least 1."""
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=2, clock=clock)
    assert buckets.take("k") == buckets.take("k") == 0.0
    assert buckets.take("k") == 0.5
    assert buckets.take("k") == 0.5
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def test_memory_is_bounded_by_the_least_recently_used() -> None:
    """A flood of distinct clients cannot grow the table; the busiest key stays tracked."""
    buckets = TokenBuckets(rate=1.0, burst=5, max_keys=100, clock=Clock())
    for _ in range(5):
        buckets.take("busy")
    for i in range(10_000):
        buckets.take(f"c{i}")
        if i % 50 == 0:
            buckets.charge("busy", 0)
    assert len(buckets) == 100
    assert buckets.take("busy") > 0  # still empty: it was not forgotten


def _request(peer: str, forwarded: str | None = None) -> object:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    req = make_mocked_request("GET", "/onboard/x", headers=headers)
    req._transport_peername = (peer, 1234)
    return req


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    """Anyone can write X-Forwarded-For; only our proxy's entry names the client."""
    plain = ClientAddress()
    proxied = ClientAddress(["10.0.0.0/8"])
    assert plain(_request("10.1.1.1", "192.0.2.5")) == "10.1.1.1"  # type: ignore[arg-type]
    assert proxied(_request("10.1.1.1", "192.0.2.5")) == "192.0.2.5"  # type: ignore[arg-type]
    # The client prepended a forged entry; the proxy appended the real address.
    spoofed = _request("10.1.1.1", "203.0.113.1, 192.0.2.5")
    assert proxied(spoofed) == "192.0.2.5"  # type: ignore[arg-type]
    # Not from the proxy: the header is ignored.
    assert proxied(_request("192.0.2.99", "203.0.113.1")) == "192.0.2.99"  # type: ignore[arg-type]
    # Two trusted hops, then the client.
    chain = _request("10.1.1.1", "192.0.2.5, 10.2.2.2")
    assert proxied(chain) == "192.0.2.5"  # type: ignore[arg-type]


def test_an_ipv6_client_counts_as_its_slash_64() -> None:
    """Rotating through one's own /64 gains nothing; a mapped IPv4 address stays IPv4."""
    client = ClientAddress()
    a = client(_request("2001:db8:1:2::1"))  # type: ignore[arg-type]
    b = client(_request("2001:db8:1:2:ffff::9"))  # type: ignore[arg-type]
    assert a == b == "2001:db8:1:2::/64"
    assert client(_request("::ffff:192.0.2.1")) == "192.0.2.1"  # type: ignore[arg-type]


def test_a_bad_trusted_proxy_entry_stops_startup_with_its_variable() -> None:
    """A typo in the proxy list is named at startup rather than failing on the first request."""
    from bot.settings import Settings

    ok = Settings(_env_file=None, web={"trusted_proxies": ["10.0.0.0/8", "2001:db8::1"]})
    assert not [p for p in ok.problems() if "TRUSTED_PROXIES" in p]
    bad = Settings(_env_file=None, web={"trusted_proxies": ["10.0.0.0/33"]})
    assert any(p.startswith("RENEWBOT_WEB__TRUSTED_PROXIES") for p in bad.problems())
