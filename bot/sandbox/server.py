"""The sandbox's two listeners on 127.0.0.1: HTTPS (protocol, Graph) and HTTP (login page)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bot.sandbox import authorize, login, oauth
from bot.sandbox.directory import Directory, demo_directory
from bot.sandbox.tls import make_ca_and_server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Sandbox:
    directory: Directory = field(default_factory=demo_directory)
    workdir: Path | None = None
    authority_host: str = ""
    login_url: str = ""
    ca_path: Path | None = None
    # Tests only: awaited before each HTTPS request is served, to hold a chosen request (say a
    # refresh-token grant) while a bot process is killed. Not a behaviour of Entra.
    gate: Callable[[web.Request], Awaitable[None]] | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def graph_url(self) -> str:
        return self.authority_host

    async def start(self, https_port: int = 0, http_port: int = 0, latency: float = 0.0) -> Sandbox:
        workdir = self.workdir or Path(tempfile.mkdtemp(prefix="renewbot-sandbox-"))
        self.ca_path, ssl_ctx = make_ca_and_server(workdir)
        https_sock = bind_loopback(https_port)
        http_sock = bind_loopback(http_port)
        self.authority_host = f"https://127.0.0.1:{https_sock.getsockname()[1]}"
        self.login_url = f"http://127.0.0.1:{http_sock.getsockname()[1]}"
        urls = {"https": self.authority_host, "http": self.login_url}
        signer = oauth.Signer()
        https = oauth.https_app(self.directory, signer, urls, latency)
        https.middlewares.insert(0, self._held)
        http = login.http_app(self.directory)
        authorize.add_routes(http, self.directory)
        for app, sock, ctx in (
            (https, https_sock, ssl_ctx),
            (http, http_sock, None),
        ):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=ctx).start()
            self._runners.append(runner)
        return self

    @web.middleware
    async def _held(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.gate is not None:
            await self.gate(request)
        return await handler(request)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()


def bind_loopback(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock
