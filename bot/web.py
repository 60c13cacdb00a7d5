"""The aiohttp application of `renewbot serve`: routes, security headers, and one cleanup
context per resource (the background workers of bot/workers.py, Teams' key refresh, Slack's
Socket Mode, webhook delivery). The access log never shows an Auth URL token.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from multidict import CIMultiDict

from adapters.storage.database import ping
from adapters.web.callback import BrowserSignInRoutes
from adapters.web.intake import IntakeEndpoint
from adapters.web.legal import LegalPages
from adapters.web.onboarding import OnboardingPage
from adapters.web.page import SignInChoices
from adapters.web.ratelimit import ClientAddress
from adapters.web.tokens import TokenEndpoint
from bot import metrics as bot_metrics
from bot import workers
from bot.bootstrap import Core, Runtime
from core import logcontext
from core.errors import StorageError
from core.ports import UnitOfWorkFactory
from core.scheduler import DeviceFlowScheduler

log = logging.getLogger("renewbot.web")
RUNTIME = web.AppKey("runtime", Runtime)
_SECRET_PATH = re.compile(r"(/onboard/)[^/?#]+")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def redact_path(path: str) -> str:
    return _SECRET_PATH.sub(r"\1<redacted>", path)


# Answered chat webhooks are logged by their adapters when they act (a command, a click); a
# line per Slack or Teams request as well cost a sixth of a `help` command's CPU under load
# (py-spy, bench/wrk.py). At DEBUG they are logged too; errors and refusals always.
_QUIET_WHEN_OK = frozenset({"/slack/events", "/api/messages"})


class RedactingAccessLogger(AbstractAccessLogger):
    """Method, path without secrets, status and time. No query string, no Referer."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status < 400 and request.path in _QUIET_WHEN_OK:
            if not self.logger.isEnabledFor(logging.DEBUG):
                return
        self.logger.info(
            "http.request",
            extra={
                "method": request.method,
                "path": redact_path(request.path),
                "status": response.status,
                "ms": round(time * 1000, 1),
            },
        )


def _secure(headers: CIMultiDict[str]) -> None:
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; an unexpected error is a 500 with a reference only."""
    logcontext.bind(request_id=uuid.uuid4().hex[:12])  # aiohttp serves each request in a task
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc.headers)
        raise
    except asyncio.CancelledError:
        raise
    except StorageError:
        log.warning("http.storage_unavailable", extra={"path": redact_path(request.path)})
        response = web.Response(
            text="The service is temporarily unavailable. Please try again in a minute.",
            status=503,
            headers={"Retry-After": "60"},
        )
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("http.unhandled", extra={"ref": ref, "path": redact_path(request.path)})
        response = web.Response(
            text=f"Something went wrong on our side (reference {ref}).", status=500
        )
    _secure(response.headers)
    return response


@dataclass
class Probes:
    """`/healthz` (the process answers) and `/readyz` (it can serve: not stopping, database up),
    holding only what they read."""

    database: Callable[[], Awaitable[None]]  # one round trip (storage's ping)
    scheduler: DeviceFlowScheduler
    stopping: asyncio.Event

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.stopping.is_set():  # SIGTERM: take no new traffic; the other replicas have it
            return web.json_response({"status": "stopping"}, status=503)
        try:
            async with asyncio.timeout(3):
                await self.database()
        except Exception:  # any failure means "not ready"; the reason goes to the log only
            log.warning("readyz.database_unavailable", exc_info=True)
            return web.json_response({"status": "unavailable", "database": "down"}, status=503)
        return web.json_response({"status": "ready", "pending_flows": self.scheduler.pending})


@dataclass
class Metrics:
    """`GET /metrics` in Prometheus' text format, from bounded queries and process counters."""

    uow: UnitOfWorkFactory
    core: Core
    process: bot_metrics.ProcessMetrics

    async def handle(self, request: web.Request) -> web.Response:
        async with self.uow(read_only=True) as uow:
            renewals = await uow.renewals.count_by_state()
            tenants = await uow.tenants.counts_by_state()
            durations = await uow.renewals.validation_histogram(bot_metrics.BUCKETS)
            outbox = await uow.outbox.stats()
        totals = self.core.monitor.totals
        text = bot_metrics.render(
            {s.value: n for s, n in renewals.items()},
            {s.value: n for s, n in tenants.items()},
            durations,
            self.process,
            totals.checked,
            totals.failures,
            totals.alerts,
            outbox,
            self.core.dispatcher.totals,
        )
        return bot_metrics.response(text)


async def _workers(app: web.Application) -> AsyncIterator[None]:
    """The background workers (bot/workers.py): started with the app, stopped gracefully."""
    rt = app[RUNTIME]
    await workers.start(rt)
    yield
    await workers.stop(rt)


async def _teams_keys(app: web.Application) -> AsyncIterator[None]:
    """Bot Framework signing keys refreshed in the background (Teams with auth on)."""
    rt = app[RUNTIME]
    task = None
    if rt.teams is not None and rt.teams.validator is not None:
        task = rt.supervisor.spawn(rt.teams.validator.refresh_forever(), "teams-keys")
    yield
    if task is not None:  # it never ends by itself: stopped before the workers drain
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _slack_socket(app: web.Application) -> AsyncIterator[None]:
    """Slack's Socket Mode connection, when an app-level token is configured."""
    rt = app[RUNTIME]
    app_token = rt.settings.slack.app_token
    if rt.slack is not None and app_token is not None:
        await rt.slack.connect_socket_mode(app_token.get_secret_value())
    yield
    if rt.slack is not None:
        await rt.slack.close()


def csrf_key(rt: Runtime) -> bytes:
    keys = rt.settings.security.encryption_keys
    secret = keys.get_secret_value().split(",")[0].strip() if keys else ""
    return hashlib.sha256(b"renewbot-csrf:" + secret.encode()).digest()


def sign_in_choices(rt: Runtime) -> SignInChoices:
    conf = rt.settings.signin
    return SignInChoices(
        browser=conf.browser,
        device_code=conf.device_code,
        app_name=conf.app_name,
        publisher=conf.publisher,
        msp_name=conf.msp_name,
        authority=urlsplit(rt.settings.identity.authority_host).netloc,
    )


def create_app(rt: Runtime, extra: list[web.RouteDef] | None = None) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    app[RUNTIME] = rt
    client = ClientAddress(rt.settings.web.trusted_proxies)
    page = OnboardingPage(
        rt.core.service,
        csrf_key(rt),
        rt.settings.web.public_url,
        sign_in_choices(rt),
        client=client,
        chaser=rt.core.chaser,
    )
    sign_in = BrowserSignInRoutes(
        rt.core.service,
        page,
        secure_cookie=rt.settings.web.public_url.startswith("https://"),
        ttl=timedelta(minutes=rt.settings.signin.ttl_minutes),
    )
    app.add_routes(sign_in.routes())  # first: /onboard/callback is not an Auth URL token
    app.add_routes(page.routes())
    probes = Probes(functools.partial(ping, rt.engine), rt.scheduler, rt.stopping)
    app.add_routes(
        [web.get("/healthz", probes.healthz), web.get("/readyz", probes.readyz), *(extra or [])]
    )
    signin = rt.settings.signin
    app.add_routes(LegalPages(signin.app_name, signin.msp_name or signin.publisher).routes())
    app.router.add_get("/metrics", Metrics(rt.uow, rt.core, rt.metrics).handle)
    keys = rt.settings.monitor.api_keys
    intake = IntakeEndpoint(
        rt.intake, (keys.get_secret_value() if keys else "").split(","), client=client
    )
    app.router.add_post("/api/msal-errors", intake.handle)
    if rt.slack is not None:
        app.router.add_post("/slack/events", rt.slack.handle)
    if rt.teams is not None:
        app.router.add_post("/api/messages", rt.teams.bot.handle)
    if rt.tokens is not None:
        app.router.add_get("/api/tokens/{tenant}/{token_set}", TokenEndpoint(rt.tokens).handle)
    # One cleanup context per resource; on stop they unwind in reverse: Slack's socket closes,
    # then the workers finish their step and stop.
    app.cleanup_ctx.extend([_workers, _teams_keys, _slack_socket, _webhook_worker])
    return app


async def _webhook_worker(app: web.Application) -> AsyncIterator[None]:
    """Deliver stored webhook events until the process stops (when receivers are configured)."""
    rt = app[RUNTIME]
    if rt.webhooks is not None:
        every = rt.settings.webhooks.poll_seconds
        rt.supervisor.spawn(rt.webhooks.run(rt.stopping, every), "webhook-delivery")
    yield


# SIGTERM: requests in progress get this long to finish (the onboarding page's live status
# holds a connection open), then background work drains (15 s): within Kubernetes' default 30 s
# grace period. Renewals in flight keep their leases; another replica adopts them.
SHUTDOWN_SECONDS = 10.0


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    refreeze: list[asyncio.TimerHandle] = []

    async def _no_refreeze(_: web.Application) -> None:
        for timer in refreeze:
            timer.cancel()

    app.on_cleanup.append(_no_refreeze)
    runner = web.AppRunner(
        app,
        access_log_class=RedactingAccessLogger,
        access_log=logging.getLogger("renewbot.access"),
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # What exists now (modules, the app, database and chat clients) lives as long as the
    # process. Frozen out of the collector's sight, a full collection walks only what requests
    # made: measured, full collections stalled the loop 70-90 ms and set the p99 of command ->
    # first thread post (bench/wrk.py, first-post row); frozen, they take a few ms.
    _freeze()
    # The first requests make more that lives as long: pooled database connections with their
    # prepared statements, compiled SQL, modules imported on first use. Left in sight, every
    # full collection walked them (20,000 objects, 6-12 ms stalls under load, bench/wrk.py;
    # frozen, 3 ms). Frozen once more, once: what is in flight then (and may become cyclic
    # garbage later) stays a one-time cost.
    refreeze.append(asyncio.get_running_loop().call_later(FREEZE_AGAIN_AFTER, _freeze))
    return runner


FREEZE_AGAIN_AFTER = 60.0
"""Seconds of serving after which what exists is frozen once more."""


def _freeze() -> None:
    """Everything that exists now, out of the garbage collector's sight."""
    gc.collect()
    gc.freeze()
