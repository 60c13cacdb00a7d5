"""Shared steps of the token API tests: a tenant's tokens as after a sign-in, made stale; keys."""

from __future__ import annotations

import json
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msal

from adapters.storage.token_cache import SqlTokenCacheStore
from adapters.storage.tokens import SqlTokenGrants
from bot.bootstrap import Runtime
from bot.sandbox.directory import DEFAULT_CLIENT_ID
from bot.sandbox.server import Sandbox
from core.tokens import new_key

GRAPH = ["https://graph.microsoft.com/.default"]


async def seed_tokens(rt: Runtime, sandbox: Sandbox, tenant_id: str) -> dict[str, Any]:
    """Store the tokens a sign-in would leave (the sandbox's load-test grant, through MSAL's
    cache). Returns the token response."""
    ctx = ssl.create_default_context(cafile=str(sandbox.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.post(
            f"{sandbox.authority_host}/{tenant_id}/_sandbox/grant",
            data={"client_id": DEFAULT_CLIENT_ID},
        ) as resp:
            response = dict(await resp.json())
    cache = msal.SerializableTokenCache()
    cache.add(
        {
            "client_id": DEFAULT_CLIENT_ID,
            "scope": GRAPH,
            "token_endpoint": f"{sandbox.authority_host}/{tenant_id}/oauth2/v2.0/token",
            "response": response,
            "params": {},
            "data": {},
            "grant_type": "refresh_token",
        }
    )
    await SqlTokenCacheStore(rt.engine, rt.box).save(tenant_id, cache.serialize())
    return response


async def stored_cache(rt: Runtime, tenant_id: str) -> dict[str, Any]:
    text = await SqlTokenCacheStore(rt.engine, rt.box).load(tenant_id)
    assert text
    return dict(json.loads(text))


async def age_tokens(rt: Runtime, tenant_id: str, left: float = -60) -> None:
    """Time passes: the stored access tokens have ``left`` seconds to live (the refresh token
    is untouched), as an hour after the last sign-in or refresh."""
    cache = await stored_cache(rt, tenant_id)
    for entry in cache.get("AccessToken", {}).values():
        entry["expires_on"] = str(int(time.time() + left))
    await SqlTokenCacheStore(rt.engine, rt.box).save(tenant_id, json.dumps(cache))


async def make_key(
    rt: Runtime,
    tenants: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    rate: int = 6000,
    service: str = "backup-jobs",
) -> str:
    key, presented = new_key(service, tenants, sets, rate, datetime.now(UTC))
    await SqlTokenGrants(rt.engine).add_key(key)
    return presented


def token_posts(sandbox: Sandbox, tenant_id: str) -> int:
    """Requests to the tenant's token endpoint the sandbox has seen (refreshes, here)."""
    path = f"/{tenant_id}/oauth2/v2.0/token"
    return sum(1 for method, p in sandbox.directory.requests if method == "POST" and p == path)
