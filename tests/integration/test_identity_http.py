"""MSAL's HTTP client: requests from pool threads carried out on the loop, metadata kept a day."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapters.identity.http import METADATA, HttpStatusError, LoopHttpClient


class Authority:
    """A loopback stand-in that counts what it is asked."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.forms: list[dict[str, str]] = []

    async def metadata(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        self.hits[tenant] += 1
        if tenant == "missing":
            return web.json_response({"error": "invalid_tenant"}, status=400)
        base = f"https://login.example/{tenant}"
        return web.json_response({"token_endpoint": f"{base}/oauth2/v2.0/token"})

    async def token(self, request: web.Request) -> web.Response:
        self.forms.append({k: str(v) for k, v in (await request.post()).items()})
        return web.json_response(
            {"error": "invalid_grant"}, status=400, headers={"Retry-After": "3"}
        )


@pytest.fixture
async def authority() -> AsyncIterator[tuple[Authority, str]]:
    stand_in = Authority()
    app = web.Application()
    app.router.add_get("/{tenant}/v2.0" + METADATA, stand_in.metadata)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", stand_in.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield stand_in, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[LoopHttpClient]:
    async with aiohttp.ClientSession() as session:
        yield LoopHttpClient(asyncio.get_running_loop(), session)


async def test_metadata_fetched_ahead_is_not_fetched_again(
    authority: tuple[Authority, str], client: LoopHttpClient
) -> None:
    stand_in, base = authority
    url = f"{base}/t1/v2.0{METADATA}"
    await client.prefetch_metadata(url)
    await client.prefetch_metadata(url)
    first = await asyncio.to_thread(client.get, url)
    second = await asyncio.to_thread(client.get, url)
    assert first.status_code == second.status_code == 200
    assert "t1/oauth2/v2.0/token" in second.text
    assert stand_in.hits["t1"] == 1


async def test_metadata_of_many_tenants_is_kept_up_to_the_limit(
    authority: tuple[Authority, str],
) -> None:
    stand_in, base = authority
    async with aiohttp.ClientSession() as session:
        client = LoopHttpClient(asyncio.get_running_loop(), session, keep_metadata=2)
        for tenant in ("a", "b", "c", "a"):
            await asyncio.to_thread(client.get, f"{base}/{tenant}/v2.0{METADATA}")
    assert stand_in.hits == Counter({"a": 2, "b": 1, "c": 1})  # "a" was the oldest, let go


async def test_an_error_answer_is_not_kept(
    authority: tuple[Authority, str], client: LoopHttpClient
) -> None:
    stand_in, base = authority
    url = f"{base}/missing/v2.0{METADATA}"
    await client.prefetch_metadata(url)
    response = await asyncio.to_thread(client.get, url)
    assert response.status_code == 400
    with pytest.raises(HttpStatusError):
        response.raise_for_status()
    assert stand_in.hits["missing"] == 2


async def test_post_sends_a_form_and_reads_headers_without_regard_to_case(
    authority: tuple[Authority, str], client: LoopHttpClient
) -> None:
    stand_in, base = authority
    response = await asyncio.to_thread(
        client.post,
        f"{base}/t1/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "client_id": "app"},
    )
    assert response.status_code == 400 and '"invalid_grant"' in response.text
    assert response.headers["retry-after"] == "3"
    assert stand_in.forms == [{"grant_type": "refresh_token", "client_id": "app"}]


async def test_a_call_from_the_event_loop_is_refused(
    authority: tuple[Authority, str], client: LoopHttpClient
) -> None:
    """Waiting on the loop for the loop would hang it: MSAL belongs on a pool thread."""
    stand_in, base = authority
    with pytest.raises(RuntimeError, match="pool thread"):
        client.post(f"{base}/t1/oauth2/v2.0/token", data={})
    assert stand_in.forms == []


async def test_unreachable_authority_raises_a_client_error(client: LoopHttpClient) -> None:
    from tests.servers.postgres import free_port

    with pytest.raises(aiohttp.ClientError):
        await asyncio.to_thread(client.get, f"http://127.0.0.1:{free_port()}/t/v2.0{METADATA}")
