"""`make image-check`, the renewal: through the published port of a running compose project.

Run by deploy/image-check.sh after `up`. A signed /renew-token goes to nginx's published port,
the Auth URL comes back through the Slack stand-in, the customer presses Start and signs in at
the sandbox's published login page. Replica bot-2 is stopped while bot-1 issues the code (so
bot-1 holds the flow's lease), started again, then bot-1 is SIGKILLed: bot-2 must finish.
Prints timings; exit status 0 only when the renewal is validated and announced once.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp

from tests.integration.test_slack import command_body, signed

T = TypeVar("T")
FRONT = "http://127.0.0.1:8080"
SLACK = "http://127.0.0.1:9300"
LOGIN = "http://127.0.0.1:8444/devicelogin"


def compose(*args: str) -> None:
    cmd = [*sys.argv[1:], *args]
    print("$ compose", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, timeout=300)  # noqa: S603 - the compose command we were given


async def until(what: Callable[[], Awaitable[T | None]], timeout: float, why: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = await what()
        except aiohttp.ClientError:
            got = None
        if got:
            return got
        await asyncio.sleep(0.5)
    raise SystemExit(f"image-check: timed out waiting for {why}")


async def main() -> int:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            async with http.get(f"{FRONT}/readyz") as resp:
                return resp.status == 200

        async def posts(fragment: str) -> list[dict[str, Any]]:
            async with http.get(f"{SLACK}/_calls") as resp:
                calls = await resp.json()
            return [
                c["args"]
                for c in calls
                if c["method"] == "chat.postMessage" and fragment in str(c["args"].get("text"))
            ]

        await until(ready, 180, "/readyz through the published port")
        print(f"ready after {time.monotonic() - started:.1f} s", flush=True)
        compose("stop", "bot-2")
        body = command_body(SimpleNamespace(base_url=SLACK), "contoso")  # type: ignore[arg-type]
        async with http.post(f"{FRONT}/slack/events", data=body, headers=signed(body)) as resp:
            assert resp.status == 200, resp.status
        invited = await until(lambda: posts("/onboard/"), 60, "the Auth URL in the thread")
        auth_url = re.search(r"http://127\.0\.0\.1:8080/onboard/[\w-]+", invited[0]["text"])
        assert auth_url, invited[0]["text"]
        async with http.get(auth_url.group(0)) as resp:
            csrf = (await resp.text()).split("name=csrf value='")[1].split("'")[0]
        async with http.post(
            f"{auth_url.group(0)}/start",
            data={"csrf": csrf},
            headers={"Accept": "application/json"},
        ) as resp:
            code = str((await resp.json())["user_code"])
        print(f"code issued by bot-1: {code}", flush=True)
        compose("start", "bot-2")  # adopts the flow at start; bot-1 holds its lease
        await asyncio.sleep(3)  # let bot-2 finish starting and watch the flow
        compose("kill", "-s", "SIGKILL", "bot-1")
        async with http.post(LOGIN, data={"otc": code}) as resp:
            assert resp.status == 200, resp.status
        upn = {"otc": code, "upn": "admin@contoso.com"}
        async with http.post(f"{LOGIN}/signin", data=upn) as resp:
            assert resp.status == 200, resp.status
        await until(lambda: posts("renewed and validated"), 120, "the validated announcement")
        validated = [p for p in await posts("Validated:") if p.get("channel") == "C-ops"]
        assert len(validated) == 1, validated
        print(
            f"validated by bot-2 after bot-1 was killed; {time.monotonic() - started:.1f} s "
            "from the first /readyz poll",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
