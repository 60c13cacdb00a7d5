"""Two replicas on one PostgreSQL: 100 concurrent requests for one expired token, one refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.bootstrap import runtime
from bot.sandbox.server import bind_loopback
from bot.web import create_app, start_site
from tests.integration.live import T_CONTOSO, live_bot
from tests.integration.tokens import age_tokens, make_key, seed_tokens, stored_cache, token_posts
from tests.servers.postgres import fresh_database

pytestmark = pytest.mark.postgres


async def test_one_refresh_at_microsoft_for_100_requests_on_two_replicas(
    tmp_path: Path, postgres_url: str
) -> None:
    """Single flight across processes: the database lease lets one replica refresh; the other
    waits for the stored token. One refresh at the sandbox, one rotated refresh token stored."""
    url = await fresh_database(postgres_url)
    async with live_bot(tmp_path, url) as a:
        async with runtime(a.rt.settings, migrate=False) as b:
            sock = bind_loopback(0)
            port_b = sock.getsockname()[1]
            sock.close()
            runner_b = await start_site(create_app(b), "127.0.0.1", port_b)
            try:
                seeded = await seed_tokens(a.rt, a.sandbox, T_CONTOSO)
                await age_tokens(a.rt, T_CONTOSO)
                key = await make_key(a.rt)
                before = token_posts(a.sandbox, T_CONTOSO)
                bases = [a.base_url, f"http://127.0.0.1:{port_b}"]

                async def one(i: int) -> tuple[int, str]:
                    url = f"{bases[i % 2]}/api/tokens/contoso/graph"
                    headers = {"Authorization": f"Bearer {key}"}
                    async with a.http.get(url, headers=headers) as resp:
                        return resp.status, str((await resp.json()).get("access_token"))

                answers = await asyncio.gather(*(one(i) for i in range(100)))
            finally:
                await runner_b.cleanup()
            refreshes = a.rt.tokens.refreshes + b.tokens.refreshes  # type: ignore[union-attr]
        assert [s for s, _ in answers] == [200] * 100
        tokens = {t for _, t in answers}
        assert len(tokens) == 1 and seeded["access_token"] not in tokens
        assert token_posts(a.sandbox, T_CONTOSO) - before == 1, "more than one refresh"
        assert refreshes == 1
        cache = await stored_cache(a.rt, T_CONTOSO)
        (stored_rt,) = [e["secret"] for e in cache["RefreshToken"].values()]
        assert (
            stored_rt != seeded["refresh_token"] and stored_rt in a.sandbox.directory.issued_secrets
        )
