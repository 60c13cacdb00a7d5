"""A whole renewal driven through Microsoft's own local Teams client, the Agents Playground.

The Playground (npm `@microsoft/m365agentsplayground`, installed in tests/node by `make test`)
plays Teams: it posts real Teams-shaped activities to `/api/messages`, hosts the connector the bot
replies to, renders Adaptive Cards and turns card clicks into Action.Submit activities. Its own
HTTP API (the one its web UI uses) stands in for the person at the keyboard. The bot runs in its
development (anonymous) mode, since the Playground's auth needs Microsoft's login service. Telemetry
is off both ways, and the test checks that the Playground holds no connection beyond loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.sandbox.server import bind_loopback
from core.model import RenewalState as S
from tests.conftest import need
from tests.integration.live import Live, live_bot, until
from tests.servers.bot_connector import card_buttons, card_text

TOOLS = Path(__file__).resolve().parents[1] / "node"
PLAYGROUND = TOOLS / "node_modules" / ".bin" / "agentsplayground"
CHANNEL = "team-id"  # the Playground's "General" channel of "My Team"


@dataclass
class Playground:
    base_url: str
    proc: asyncio.subprocess.Process
    http: aiohttp.ClientSession
    config: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    remotes: set[str] = field(default_factory=set)

    @property
    def user(self) -> dict[str, Any]:
        return dict(self.config["currentUser"])

    @property
    def bot(self) -> dict[str, Any]:
        return dict(self.config["bot"])

    async def say_in_channel(self, text: str) -> str:
        """@mention the bot in a new channel post; returns the thread's conversation id."""
        mention = f"<at>{self.bot['name']}</at>"
        body = {
            "from": {"id": self.user["id"]},
            "text": f"{mention} {text}",
            "textFormat": "plain",
            "mentions": [{"mentioned": {"id": self.bot["id"]}, "text": mention}],
        }
        url = f"{self.base_url}/_conversation/v1/conversations/{CHANNEL}/messages"
        async with self.http.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["postConversationId"])

    async def click(self, thread: str, message_id: str, data: dict[str, Any]) -> None:
        """Press an Action.Submit button of the bot's card ``message_id``."""
        body = {
            "conversation": {"id": thread},
            "from": {"id": self.user["id"]},
            "replyToId": message_id,
            "value": data,
        }
        async with self.http.post(f"{self.base_url}/_conversation/v1/submit", json=body) as resp:
            assert resp.status == 200, await resp.text()

    def cards(self, thread: str) -> dict[str, dict[str, Any]]:
        """The bot's messages in ``thread`` as the Playground shows them now, by message id."""
        shown: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event.get("actionConversationId") == thread and "message" in event:
                message = event["message"]
                shown[str(message["messageId"])] = message
        return shown

    def texts(self, thread: str) -> list[str]:
        return [card_text(m) for m in self.cards(thread).values()]


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _remote_addresses(pid: int) -> set[str]:
    """Remote IPs of the TCP sockets process ``pid`` holds (from /proc/net/tcp and tcp6)."""
    inodes, remotes = _socket_inodes(pid), set()
    for table, size in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] not in inodes:
                continue
            raw = cols[2].split(":")[0]
            packed = bytes.fromhex(raw)
            if size == 8:
                remotes.add(str(ipaddress.IPv4Address(packed[::-1])))
            else:
                words = [packed[i : i + 4][::-1] for i in range(0, 16, 4)]
                remotes.add(str(ipaddress.IPv6Address(b"".join(words))))
    return remotes


def _is_local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, teams={"allow_anonymous": True}) as bot:
        yield bot


@pytest.fixture
async def playground(live: Live, tmp_path: Path) -> AsyncIterator[Playground]:
    need(None if PLAYGROUND.exists() else "run `make test` to install tests/node (npm ci)")
    sock = bind_loopback(0)
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "APPLICATION_INSIGHTS_NO_STATSBEAT": "true",
        "TEAMSAPPTESTER_BROWSER": "none",
        "M365_AGENTS_PLAYGROUND_LOGFILE": str(tmp_path / "playground.log"),
    }
    args = [str(PLAYGROUND), "-e", f"{live.base_url}/api/messages", "-c", "msteams"]
    args += ["-p", str(port), "--service-url", f"http://127.0.0.1:{port}/_connector"]
    args += ["--disable-telemetry"]
    log = (tmp_path / "playground.out").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=tmp_path, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            pg = Playground(base, proc, http)
            deadline = asyncio.get_running_loop().time() + 60
            while not pg.config:
                assert proc.returncode is None, (tmp_path / "playground.out").read_text()
                assert asyncio.get_running_loop().time() < deadline, "the Playground did not start"
                try:
                    async with http.get(f"{base}/_internal/v1/config") as resp:
                        pg.config = (await resp.json())["config"]
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            ws = await http.ws_connect(f"{base}/_ws_conversation/v1/conversations/stream")
            listener = asyncio.create_task(_listen(ws, pg))
            try:
                yield pg
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                await ws.close()
            pg.remotes |= _remote_addresses(proc.pid)
            assert pg.remotes, "the socket check saw no connection at all"
            assert all(_is_local(a) for a in pg.remotes), pg.remotes
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        log.close()


async def _listen(ws: aiohttp.ClientWebSocketResponse, pg: Playground) -> None:
    """Collect what the Playground shows, and watch its sockets while the test runs."""
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            pg.events.append(json.loads(msg.data))
            pg.remotes |= _remote_addresses(pg.proc.pid)


def _shown(pg: Playground, thread: str, fragment: str) -> Callable[[], list[str]]:
    return lambda: [t for t in pg.texts(thread) if fragment in t]


async def test_renewal_through_the_agents_playground(live: Live, playground: Playground) -> None:
    """Support types the command in a channel and, on a call with the customer, clicks New code on
    the card; the customer signs in with the code read out from the thread: validated."""
    pg = playground
    thread = await pg.say_in_channel("renew-token contoso")
    assert thread.startswith(f"{CHANNEL};messageid=")
    (auth_text,) = await until(_shown(pg, thread, "/onboard/"))
    assert re.search(r"http://\S+/onboard/[\w-]+", auth_text)
    status_id, status_card = next(iter(pg.cards(thread).items()))
    assert f"requested by {pg.user['name']}" in card_text(status_card)

    new_code = next(b for b in card_buttons(status_card) if b["title"] == "New code")
    await pg.click(thread, status_id, new_code["data"])
    (code_text,) = await until(_shown(pg, thread, "Device code: "))
    code = re.search(r"Device code: (\S+)", code_text)
    assert code

    await live.sign_in(code.group(1), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    await until(_shown(pg, thread, "Validated: Contoso Ltd has new tokens"))
    final = await until(
        lambda: (
            "[x] Validated" in card_text(pg.cards(thread)[status_id])
            and pg.cards(thread)[status_id]
        )
    )
    assert [b["title"] for b in card_buttons(final)] == ["Validate again"]
