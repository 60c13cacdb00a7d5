"""A running renewbot for integration tests: sandbox IdP, real MSAL, real storage, web server.

Chat goes to RecordingChatThreads. Customer actions go over real HTTP, like a browser would.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.storage.crypto import generate_key
from bot.bootstrap import Runtime, runtime
from bot.demo import demo_tenants
from bot.sandbox.directory import DEFAULT_CLIENT_ID, demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from bot.settings import Settings
from bot.web import create_app, start_site
from core.model import Actor, Origin, Renewal, RenewalState, Tenant
from core.ports import Clock
from tests.fakes.core import RecordingChatThreads

SUPPORT = Actor("test", "U-support", "Sam Support")
HERE = Origin("test", "C-support")
T_CONTOSO = "00000001-0000-4000-8000-000000000001"
T_FABRIKAM = "00000002-0000-4000-8000-000000000002"
T_NORTHWIND = "00000003-0000-4000-8000-000000000003"


async def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check()`` (plain or async) with a deadline until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@dataclass
class Live:
    rt: Runtime
    sandbox: Sandbox
    chat: RecordingChatThreads
    base_url: str
    tenants: dict[str, Tenant]
    http: aiohttp.ClientSession

    async def say(self, text: str) -> str:
        reply = (await self.rt.core.desk.handle(text, HERE, SUPPORT)).text
        await self.delivered()
        return reply

    async def delivered(self, timeout: float = 10.0) -> None:
        """Wait (with a deadline) until the outbox has sent what is due: chat posts are queued."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            async with self.rt.uow(read_only=True) as uow:
                if (await uow.outbox.stats())["pending"] == 0:
                    return
            await asyncio.sleep(0.05)

    def auth_url(self) -> str:
        for text in reversed(self.chat.texts()):
            if m := re.search(r"http://\S+/onboard/\S+", text):
                return m.group(0)
        raise AssertionError("no Auth URL in the thread")

    async def renewal(self, slug: str) -> Renewal:
        async with self.rt.uow() as uow:
            (latest,) = await uow.renewals.for_tenant(self.tenants[slug].key, limit=1)
        return latest

    async def wait_for(
        self, slug: str, check: Callable[[Renewal], bool], timeout: float = 30.0
    ) -> Renewal:
        """Poll the database with a deadline until ``check`` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            async with self.rt.uow() as uow:
                found = await uow.renewals.for_tenant(self.tenants[slug].key, limit=1)
            if found and check(found[0]):
                return found[0]
            if asyncio.get_running_loop().time() > deadline:
                state = found[0].state.value if found else "not created"
                raise AssertionError(f"timed out; renewal is {state}")
            await asyncio.sleep(0.05)

    async def wait_text(self, fragment: str, timeout: float = 30.0) -> str:
        """Poll the recorded thread posts with a deadline until one contains ``fragment``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for text in self.chat.texts() + self.chat.announcements:
                if fragment in text:
                    return text
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no post contains {fragment!r}: {self.chat.texts()[-3:]}")
            await asyncio.sleep(0.05)

    async def wait_state(self, slug: str, *states: RenewalState, timeout: float = 30.0) -> Renewal:
        return await self.wait_for(slug, lambda r: r.state in states, timeout)

    async def csrf(self, auth_url: str) -> str:
        async with self.http.get(auth_url) as resp:
            body = await resp.text()
        m = re.search(r"name=csrf value='([0-9a-f]+)'", body)
        assert m, body[:300]
        return m.group(1)

    async def press(self, auth_url: str, action: str = "start", **form: str) -> dict[str, Any]:
        data = {"csrf": await self.csrf(auth_url), **form}
        async with self.http.post(
            f"{auth_url}/{action}", data=data, headers={"Accept": "application/json"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def sign_in(self, user_code: str, upn: str, consent: str | None = "accept") -> str:
        """Do what the customer does on the sandbox login page. Returns the last page."""
        login = self.sandbox.login_url + "/devicelogin"
        async with self.http.post(login, data={"otc": user_code}) as resp:
            assert resp.status == 200, await resp.text()
        async with self.http.post(f"{login}/signin", data={"otc": user_code, "upn": upn}) as resp:
            page = await resp.text()
        if "/devicelogin/consent" in page and consent:
            async with self.http.post(
                f"{login}/consent", data={"otc": user_code, "decision": consent, "org": "1"}
            ) as resp:
                page = await resp.text()
        return page

    async def decline(self, user_code: str) -> None:
        login = self.sandbox.login_url + "/devicelogin"
        async with self.http.post(f"{login}/decline", data={"otc": user_code}) as resp:
            assert resp.status == 200


@asynccontextmanager
async def live_bot(
    tmp_path: Path,
    database_url: str | None = None,
    *,
    interval: int = 1,
    code_lifetime: int = 900,
    extra_routes: list[web.RouteDef] | None = None,
    poll_lease: float = 30.0,
    slack: dict[str, Any] | None = None,
    teams: dict[str, Any] | None = None,
    access: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    signin: dict[str, Any] | None = None,
    sandbox: Sandbox | None = None,
    port: int | None = None,
    key: str | None = None,
    seed: bool = True,
    more: dict[str, Any] | None = None,
    email: dict[str, Any] | None = None,
    chase: dict[str, Any] | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Live]:
    """A running bot. Pass ``sandbox``, ``port``, ``key`` and ``seed=False`` to restart one."""
    own_sandbox = sandbox is None
    if sandbox is None:
        sandbox = await Sandbox(
            demo_directory(interval=interval, code_lifetime=code_lifetime),
            workdir=tmp_path / "sandbox",
        ).start()
    if port is None:
        sock = bind_loopback(0)
        port = sock.getsockname()[1]
        sock.close()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,
        environment="development",
        database={"url": database_url or f"sqlite+aiosqlite:///{tmp_path}/bot.db"},
        web={"host": "127.0.0.1", "port": port, "public_url": base},
        identity={
            "authority_host": sandbox.authority_host,
            "client_id": DEFAULT_CLIENT_ID,
            "ca_bundle": str(sandbox.ca_path),
            "graph_url": sandbox.graph_url,
            "poll_lease_seconds": poll_lease,
        },
        security={"encryption_keys": key or generate_key()},
        slack=slack or {},
        teams=teams or {},
        access=access or {},
        monitor=monitor or {"enabled": False},
        signin=signin or {},
        **(more or {}),  # further setting groups (tokens, webhooks)
        email=email or {},
        chase=chase or {},
    )
    chat = RecordingChatThreads()
    try:
        async with runtime(settings, clock) as rt:
            rt.chat.add("test", chat)
            tenants = demo_tenants(sandbox.directory)
            if seed:
                async with rt.uow() as uow:
                    for t in tenants:
                        await uow.tenants.add(t)
                    await uow.commit()
            runner = await start_site(create_app(rt, extra_routes), "127.0.0.1", port)
            try:
                async with aiohttp.ClientSession() as http:
                    yield Live(rt, sandbox, chat, base, {t.slug: t for t in tenants}, http)
            finally:
                await runner.cleanup()
    finally:
        if own_sandbox:
            await sandbox.stop()
