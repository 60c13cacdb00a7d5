"""`renewbot demo`: sandbox identity provider, web server and console chat on embedded defaults.

Interactive: type `/renew-token contoso`, open the Auth URL in a browser, sign in at the sandbox.
Invitation emails go to a local mailbox (.eml files in the demo's directory) shown in the console.
Scripted (`--scripted`): a scripted customer opens the Auth URL, presses Start, signs in at the
sandbox over HTTP; the transcript is printed and the exit status is 0 only if the renewal reached
VALIDATED.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import aiohttp
from pydantic import SecretStr

from adapters.console.chat import ConsoleChat
from adapters.console.threads import PLATFORM, ConsoleThreads
from adapters.email.local import LocalMailbox
from adapters.storage.crypto import generate_key
from bot.bootstrap import Runtime, runtime
from bot.sandbox.directory import DEFAULT_CLIENT_ID, Directory, demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from bot.settings import (
    DatabaseSettings,
    EmailSettings,
    IdentitySettings,
    MonitorSettings,
    SecuritySettings,
    Settings,
    WebSettings,
)
from bot.web import create_app, start_site
from core.model import Actor, RenewalState, Tenant

SUPPORT = Actor(PLATFORM, "support", "Sam (support)")
CASES = {
    "contoso": "the happy path (sign in as admin@contoso.com)",
    "fabrikam": "Enterprise Application deleted: consent needed (it@fabrikam.com is Global "
    "Administrator, user@fabrikam.com is not)",
    "northwind": "Conditional Access blocks device code sign-in: Sign in with Microsoft works",
    "tailspin": "the happy path, second tenant",
}


def demo_tenants(directory: Directory) -> list[Tenant]:
    admins = {a.tenant_id: a.upn for a in directory.accounts.values() if a.global_admin}
    return [
        Tenant(
            f"demo-{t.domain.split('.')[0]}",
            t.domain.split(".")[0],
            t.name,
            t.tenant_id,
            t.domain,
            admins.get(t.tenant_id, f"admin@{t.domain}"),
        )
        for t in directory.tenants.values()
    ]


def demo_settings(workdir: Path, sandbox: Sandbox, port: int) -> Settings:
    return Settings(
        environment="development",
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{workdir}/renewbot.db"),
        web=WebSettings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}"),
        identity=IdentitySettings(
            authority_host=sandbox.authority_host,
            client_id=DEFAULT_CLIENT_ID,
            ca_bundle=str(sandbox.ca_path),
            graph_url=sandbox.graph_url,
        ),
        security=SecuritySettings(encryption_keys=SecretStr(generate_key())),
        email=EmailSettings(organization="Demo MSP"),  # delivered to the local mailbox
        monitor=MonitorSettings(enabled=False),
    )


async def scripted_customer(
    auth_url: str, account: str, timeout: float = 60.0
) -> dict[str, object]:
    """Do what the customer does, over HTTP: open the page, Start, sign in, wait for the end."""
    base = auth_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.get(auth_url) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"the Auth URL answered {resp.status}")
        match = re.search(r"name=csrf value='([0-9a-f]+)'", body)
        if not match:
            raise RuntimeError("no Start button on the page")
        async with http.post(
            f"{base}/start",
            data={"csrf": match.group(1), "admin_upn": account},
            headers={"Accept": "application/json", "Origin": auth_url.split("/onboard/")[0]},
        ) as resp:
            status = await resp.json()
        code, login = status["user_code"], status["verification_uri"]
        async with http.post(login, data={"otc": code}) as resp:
            await resp.text()
        async with http.post(f"{login}/signin", data={"otc": code, "upn": account}) as resp:
            page = await resp.text()
        if "/devicelogin/consent" in page:
            async with http.post(
                f"{login}/consent", data={"otc": code, "decision": "accept", "org": "1"}
            ) as resp:
                await resp.text()
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            async with http.get(f"{base}/status") as resp:
                status = await resp.json()
            if status["done"] or status["final"] or status["error"]:
                return dict(status)
            await asyncio.sleep(0.5)
        raise TimeoutError("the renewal did not finish in time")


async def browser_sign_in(
    http: aiohttp.ClientSession, auth_url: str, account: str, *, org_consent: bool = True
) -> str:
    """Do what a customer does in a browser, over HTTP: press Sign in with Microsoft, pick the
    account at the sandbox, consent where asked. Returns the URL the sandbox sends the browser
    back to (the callback, not yet opened). ``http`` must keep cookies for 127.0.0.1
    (``aiohttp.CookieJar(unsafe=True)``)."""
    async with http.get(auth_url) as resp:
        match = re.search(r"name=csrf value='([0-9a-f]+)'", await resp.text())
    if not match:
        raise RuntimeError("no sign-in button on the page")
    async with http.post(
        f"{auth_url}/sign-in",
        data={"csrf": match.group(1), "admin_upn": account},
        headers={"Accept": "application/json", "Origin": auth_url.split("/onboard/")[0]},
    ) as resp:
        authorize = (await resp.json())["authorize_url"]
    async with http.get(authorize) as resp:
        page = await resp.text()
        target = str(resp.url).split("?")[0] + "/signin"
    txn = re.search(r"name=txn value='([^']+)'", page)
    if txn is None:
        raise RuntimeError(f"the sandbox refused the sign-in: {page[-300:]}")
    form = {"txn": txn.group(1), "upn": account}
    async with http.post(target, data=form, allow_redirects=False) as resp:
        if resp.status == 302:
            return resp.headers["Location"]
        page = await resp.text()
    if "/authorize/consent" not in page:
        raise RuntimeError("the sandbox neither signed in nor asked for consent")
    consent = target.rsplit("/", 1)[0] + "/consent"
    form = {**form, "decision": "accept", **({"org": "1"} if org_consent else {})}
    async with http.post(consent, data=form, allow_redirects=False) as resp:
        return resp.headers["Location"]


async def scripted_browser_customer(auth_url: str, account: str) -> None:
    """The customer of a tenant that blocks the device code: Sign in with Microsoft."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
        back = await browser_sign_in(http, auth_url, account)
        async with http.get(back) as resp:
            await resp.read()


async def _wait_final(rt: Runtime, tenant_key: str, timeout: float = 30.0) -> RenewalState:
    deadline = asyncio.get_running_loop().time() + timeout
    state = RenewalState.REQUESTED
    while asyncio.get_running_loop().time() < deadline:
        async with rt.uow() as uow:
            found = await uow.renewals.for_tenant(tenant_key, limit=1)
        if found:
            state = found[0].state
            # ended, or back to the invitation with the reason: nobody tries again unattended
            if state.is_terminal or (state is RenewalState.INVITED and found[0].failure_code):
                return state
        await asyncio.sleep(0.2)
    return state


async def _delivered(rt: Runtime, timeout: float = 15.0) -> None:
    """Wait (with a deadline) until the outboxes have sent what is due: chat posts and emails
    are queued."""
    if rt.core.mail is not None:
        await rt.core.mail.drain()
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with rt.uow(read_only=True) as uow:
            if (await uow.outbox.stats())["pending"] == 0:
                return
        await asyncio.sleep(0.1)


async def run(
    *, scripted: bool, tenant: str = "contoso", account: str | None = None, out: TextIO = sys.stdout
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="renewbot-demo-"))
    sandbox = await Sandbox(
        demo_directory(interval=1 if scripted else 5), workdir=workdir / "sandbox"
    ).start()
    sock = bind_loopback(0)
    port = sock.getsockname()[1]
    sock.close()
    settings = demo_settings(workdir, sandbox, port)
    threads = ConsoleThreads(out)
    mailbox = LocalMailbox(workdir / "mail", out)
    try:
        async with runtime(settings, mailer=mailbox) as rt:
            rt.chat.add(PLATFORM, threads)
            tenants = demo_tenants(sandbox.directory)
            async with rt.uow() as uow:
                for t in tenants:
                    await uow.tenants.add(t)
                await uow.commit()
            runner = await start_site(create_app(rt), "127.0.0.1", port)
            chat = ConsoleChat(rt.core.desk, out, SUPPORT)
            try:
                if scripted:
                    return await _scripted(rt, chat, threads, tenants, tenant, account, out)
                await _interactive(chat, sandbox, out)
                await _delivered(rt)  # what was typed last still shows before the demo ends
                return 0
            finally:
                await runner.cleanup()
    finally:
        await sandbox.stop()


async def _scripted(
    rt: Runtime,
    chat: ConsoleChat,
    threads: ConsoleThreads,
    tenants: list[Tenant],
    slug: str,
    account: str | None,
    out: TextIO,
) -> int:
    tenant = next((t for t in tenants if t.slug == slug), None)
    if tenant is None:
        out.write(f"unknown demo tenant {slug!r}; choose one of {', '.join(CASES)}\n")
        return 2
    await chat.say(f"/renew-token {slug}")
    await _delivered(rt)
    auth_url = next(
        (
            m.group(0)
            for line in threads.transcript
            if (m := re.search(r"https?://\S+/onboard/\S+", line))
        ),
        None,
    )
    if auth_url is None:
        out.write("no Auth URL was posted\n")
        return 1
    out.write(
        f"(scripted customer opens the Auth URL and signs in as {account or tenant.admin_upn})\n"
    )
    try:
        if slug == "northwind":  # Conditional Access blocks its device code: the browser way
            await scripted_browser_customer(auth_url, account or tenant.admin_upn)
        else:
            await scripted_customer(auth_url, account or tenant.admin_upn)
    except (aiohttp.ClientError, RuntimeError, TimeoutError, KeyError) as exc:
        out.write(f"scripted customer stopped: {exc}\n")
    state = await _wait_final(rt, tenant.key)
    await _delivered(rt)
    out.write(f"\nRenewal of {tenant.display_name} ended in state {state.value.upper()}\n")
    return 0 if state is RenewalState.VALIDATED else 1


async def _interactive(chat: ConsoleChat, sandbox: Sandbox, out: TextIO) -> None:
    out.write(
        "renewbot demo: a console chat with a sandbox identity provider on 127.0.0.1.\n"
        "Demo tenants:\n"
        + "".join(f"  {slug:10} {what}\n" for slug, what in CASES.items())
        + "Type `/renew-token contoso`, open the Auth URL in a browser and press Sign in with\n"
        "Microsoft (the sandbox's account picker), or Start authentication for a device code to\n"
        f"enter at {sandbox.login_url}/devicelogin. `help` lists commands, `quit` ends the demo.\n"
    )
    out.flush()
    stdin = ThreadPoolExecutor(1, thread_name_prefix="stdin")
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(stdin, sys.stdin.readline)
            if not line or line.strip().lower() in {"quit", "exit"}:
                return
            if line.strip():
                await chat.say(line)
    finally:
        stdin.shutdown(wait=False, cancel_futures=True)
