"""`make image-check`: the test suite's Slack Web API stand-in, serving on 0.0.0.0:9300 in the
bot replicas' network namespace, plus GET /_calls (what the bots posted) for the check.

Test tooling, never part of the image or a deployment.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.servers.slack import SlackStandIn


async def main() -> None:
    stand = SlackStandIn()

    async def calls(request: web.Request) -> web.Response:
        return web.json_response([{"method": c.method, "args": c.args} for c in stand.calls])

    app = web.Application()
    app.router.add_get("/_calls", calls)
    app.router.add_post("/api/{method}", stand._api)
    app.router.add_get("/api/{method}", stand._api)
    app.router.add_post("/_response/{id}", stand._response)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 9300).start()  # noqa: S104 - inside the check's netns
    print("slack stand-in on :9300", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
