"""Rate limits over real HTTP: guessed links and a runaway reporter get 429, nobody else does.

The bot listens on 127.0.0.1; a second client connects from 127.0.0.2 (Linux routes the whole
127.0.0.0/8 to loopback), so "another client" is another address, as the limiter sees it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event, text

from core.model import RenewalState as S
from tests.integration.live import Live, live_bot

KEY_A, KEY_B = "intake-key-a-not-a-secret", "intake-key-b-not-a-secret"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, monitor={"enabled": False, "api_keys": f"{KEY_A},{KEY_B}"}) as b:
        yield b


@asynccontextmanager
async def other_client() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


@contextmanager
def invitation_lookups(live: Live) -> Iterator[list[str]]:
    """Collects the SQL statements that look an invitation up by its token's hash."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "invitation_hash =" in statement:
            seen.append(statement)

    engine = live.rt.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def wrong_link(live: Live) -> str:
    return f"{live.base_url}/onboard/{secrets.token_urlsafe(32)}"


async def test_guessed_links_get_429_with_retry_after_and_others_are_served(live: Live) -> None:
    """300 wrong tokens from one address: 30 answers of 404, then 429 without a database
    lookup; a customer at another address still opens their page and an unknown link there is
    still a plain 404."""
    await live.say("contoso")
    auth_url = live.auth_url()
    statuses: list[int] = []
    with invitation_lookups(live) as lookups:
        for i in range(300):
            async with live.http.get(wrong_link(live)) as resp:
                statuses.append(resp.status)
                body = await resp.text()
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "Too many requests" in body and "Traceback" not in body
                    assert resp.headers["Content-Type"].startswith("text/html")
            if i == 29:
                lookups_at_limit = len(lookups)
        assert statuses[:30] == [404] * 30
        assert set(statuses[30:]) == {429}
        assert len(lookups) == lookups_at_limit  # refused before any database work
        async with live.http.get(wrong_link(live) + "/status") as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"] == "too many requests"
        async with live.http.get(auth_url) as resp:
            assert resp.status == 429  # the guesser's address is limited on real links too
    async with other_client() as customer:
        async with customer.get(auth_url) as resp:
            assert resp.status == 200 and "Contoso Ltd" in await resp.text()
        async with customer.get(wrong_link(live)) as resp:
            assert resp.status == 404


async def test_a_customer_journey_is_never_limited(live: Live) -> None:
    """Page, status polled (5 a second, ten times the page's pace) through Start, sign-in and
    validation: not one answer is 429."""
    await live.say("contoso")
    auth_url = live.auth_url()
    seen: list[int] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            async with live.http.get(auth_url + "/status") as resp:
                seen.append(resp.status)
                if resp.status == 200 and (await resp.json())["done"]:
                    done.set()
            await asyncio.sleep(0.2)  # pacing like the page's setTimeout, not a wait

    poller = asyncio.create_task(poll())
    try:
        async with live.http.get(auth_url) as resp:
            assert resp.status == 200
        status = await live.press(auth_url)
        await live.sign_in(str(status["user_code"]), "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        done.set()
        await poller
    assert len(seen) >= 2 and set(seen) == {200}


async def report(
    http: aiohttp.ClientSession, live: Live, key: str, ref: str
) -> tuple[int, dict[str, Any], str | None]:
    body = {"id": ref, "tenant": "nobody.example", "error": "invalid_grant"}
    async with http.post(
        live.base_url + "/api/msal-errors",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_a_runaway_reporter_is_limited_per_key(live: Live) -> None:
    """300 reports at once with one key: 429 with Retry-After once its burst is spent, and a
    refused report is not stored; another key (same address) is served meanwhile."""
    results = []
    for i in range(300):
        results.append(await report(live.http, live, KEY_A, f"flood-{i}"))
    statuses = [s for s, _, _ in results]
    assert statuses[:200] == [404] * 200  # unknown tenant: recorded and answered 404
    refused = [r for r in results if r[0] == 429]
    assert len(refused) >= 50
    assert all(r[2] is not None and int(r[2]) >= 1 for r in refused)
    assert all(r[1]["error"] == "too many requests" for r in refused)
    status, body, _ = await report(live.http, live, KEY_B, "other-key-1")
    assert status == 404 and body["recorded"] is True
    async with live.rt.engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM msal_errors WHERE client_ref LIKE 'flood-%'")
            )
        ).scalar()
    assert stored == 300 - len(refused)


async def test_wrong_keys_are_limited_per_address(live: Live) -> None:
    """Guessing keys: after the burst, 429 for that address; a reporter elsewhere is served."""
    statuses = [(await report(live.http, live, "guess", "g"))[0] for _ in range(260)]
    assert statuses[:200] == [401] * 200 and 429 in statuses[200:]
    async with other_client() as reporter:
        assert (await report(reporter, live, KEY_A, "elsewhere-1"))[0] == 404
