"""The composition root: the only place that constructs adapters and wires them into core.

``compose`` takes ready ports (unit tests pass fakes); ``runtime`` builds the real adapters from
Settings, unwrapping secrets here and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.email.smtp import SmtpConfig, SmtpMailer
from adapters.identity.msal_provider import MsalIdentityProvider
from adapters.slack.app import SlackBot
from adapters.slack.threads import PLATFORM as SLACK
from adapters.slack.threads import SlackThreads, make_client
from adapters.storage.conversations import SqlConversationStore
from adapters.storage.crypto import SecretBox
from adapters.storage.database import make_engine, upgrade
from adapters.storage.token_cache import SqlTokenCacheStore
from adapters.storage.tokens import SqlTokenGrants
from adapters.storage.unit_of_work import SqlUnitOfWork
from adapters.storage.webhooks import SqlWebhookQueue
from adapters.teams.app import TeamsBot
from adapters.teams.auth import AppTokenSource, ChannelTokenValidator
from adapters.teams.connector import (
    ConnectorPool,
    RenewbotAuthentication,
    TeamsAdapter,
    speed_up_msrest,
)
from adapters.teams.threads import PLATFORM as TEAMS
from adapters.teams.threads import TeamsThreads
from adapters.webhooks.sender import StandardWebhookSender
from bot.metrics import ProcessMetrics
from bot.settings import Settings
from core.access import AccessPolicy
from core.bulk import BulkRenewals
from core.chasing import ChaseConfig, Chaser
from core.chat import ChatRouter
from core.delivery import Dispatcher, StatusMemo
from core.desk import Desk
from core.health import HealthMonitor, MonitorConfig
from core.intake import ErrorIntake
from core.mailing import EmailDispatcher, InvitationMail, MailConfig
from core.notifications import Notifier
from core.ports import ChatThreads, Clock, IdentityProvider, Mailer, Message, UnitOfWorkFactory
from core.scheduler import DeviceFlowScheduler
from core.services import FlowWatcher, RenewalService, ServiceConfig
from core.tasks import Supervisor
from core.tokens import TokenApiConfig, TokenService
from core.webhooks import DeliveryConfig, WebhookDelivery


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Core:
    service: RenewalService
    desk: Desk
    monitor: HealthMonitor
    dispatcher: Dispatcher
    chaser: Chaser
    mail: EmailDispatcher | None = None  # None: email is not configured
    scheduler: DeviceFlowScheduler | None = None  # None: the caller watches flows itself


def compose(
    *,
    uow: UnitOfWorkFactory,
    identity: IdentityProvider,
    threads: ChatThreads,
    clock: Clock,
    config: ServiceConfig,
    watch_flow: FlowWatcher | None = None,
    policy: AccessPolicy | None = None,
    monitor: MonitorConfig | None = None,
    deliver_inline: bool = False,
    mailer: Mailer | None = None,
    mail: MailConfig | None = None,
    chase: ChaseConfig | None = None,
) -> Core:
    """Wire core. ``deliver_inline``: outbox rows (chat and email) are delivered before the call
    that wrote them returns (unit tests, one-shot tools); otherwise ``Core.dispatcher.run()``
    (and ``Core.mail.run()`` with a ``mailer``) must be running. Without ``watch_flow`` the
    device-flow scheduler is made here (``Core.scheduler``; its ``run()`` must be running): the
    service tells it of new codes, it calls the service to advance them."""
    memo = StatusMemo()
    notifier = Notifier(threads, uow, clock, memo=memo)

    async def summarize(batch: str) -> Message | None:
        return await notifier.summarize(batch) if notifier.summarize else None

    dispatcher = Dispatcher(uow, threads, clock, summarize=summarize, memo=memo)
    mail_config = mail or MailConfig()
    emails = None if mailer is None else EmailDispatcher(uow, mailer, clock, mail_config)

    async def kick_chat() -> None:
        if deliver_inline:
            await dispatcher.drain()
        else:
            dispatcher.wake()

    async def kick() -> None:
        await kick_chat()
        if emails is not None:
            if deliver_inline:
                await emails.drain()
            else:
                emails.wake()

    notifier.kick = kick
    notifier.dispatcher = dispatcher  # a new thread's Auth URL goes to it without a claim
    service = RenewalService(uow, identity, notifier, clock, config)
    if emails is not None:
        emails.kick_chat = kick_chat
        service.mail = InvitationMail(mail_config)
    scheduler = None
    if watch_flow is None:
        scheduler = DeviceFlowScheduler(service.advance)
        watch_flow = scheduler.watch
    service.watch_flow = watch_flow
    bulk = BulkRenewals(service, notifier)
    health = HealthMonitor(uow, identity, notifier, clock, monitor)
    chaser = Chaser(service, chase)
    desk = Desk(service, policy, bulk, chaser)
    return Core(service, desk, health, dispatcher, chaser, emails, scheduler)


def _slack(
    settings: Settings,
    core: Core,
    chat: ChatRouter,
    supervisor: Supervisor,
    session: aiohttp.ClientSession,
) -> SlackBot | None:
    """The Slack adapter, when a bot token is configured."""
    conf = settings.slack
    if conf.bot_token is None:
        return None
    client = make_client(conf.bot_token.get_secret_value(), conf.api_url, session)
    threads = SlackThreads(client, conf.alert_channel)
    chat.add(SLACK, threads)
    core.dispatcher.pacing[SLACK] = threads.pace
    secret = conf.signing_secret.get_secret_value() if conf.signing_secret else ""
    return SlackBot(
        desk=core.desk,
        threads=threads,
        client=client,
        signing_secret=secret,
        supervisor=supervisor,
        command=conf.command,
        workspaces=settings.access.workspaces,
    )


@dataclass
class TeamsParts:
    bot: TeamsBot
    threads: TeamsThreads
    validator: ChannelTokenValidator | None


def _teams(
    settings: Settings,
    core: Core,
    chat: ChatRouter,
    supervisor: Supervisor,
    engine: AsyncEngine,
    session: aiohttp.ClientSession,
) -> TeamsParts | None:
    """The Teams adapter, when an app id is configured (or anonymous development mode is on)."""
    conf = settings.teams
    if not conf.enabled:
        return None
    speed_up_msrest()
    validator = (
        None
        if conf.allow_anonymous
        else ChannelTokenValidator(conf.openid_metadata_url, conf.app_id, session)
    )
    source = (
        AppTokenSource(conf.login_url, conf.app_id, conf.app_password.get_secret_value(), session)
        if conf.app_id and conf.app_password is not None
        else None
    )
    pool = ConnectorPool(conf.app_id, source, session)
    adapter = TeamsAdapter(RenewbotAuthentication(validator, pool))
    store = SqlConversationStore(engine, TEAMS)
    threads = TeamsThreads(adapter, store, conf.app_id, conf.alert_conversation)
    chat.add(TEAMS, threads)
    core.dispatcher.pacing[TEAMS] = threads.pace
    bot = TeamsBot(desk=core.desk, threads=threads, adapter=adapter, supervisor=supervisor)
    return TeamsParts(bot, threads, validator)


class ConfigurationError(Exception):
    """Settings that cannot start the bot; the message names variables, never values."""


def secret_box(settings: Settings) -> SecretBox:
    raw = settings.security.encryption_keys
    keys = [k for k in (raw.get_secret_value() if raw else "").split(",") if k.strip()]
    if not keys:
        raise ConfigurationError("RENEWBOT_SECURITY__ENCRYPTION_KEYS is not set")
    try:
        return SecretBox(keys)
    except ValueError:
        raise ConfigurationError(
            "RENEWBOT_SECURITY__ENCRYPTION_KEYS holds a value that is not a Fernet key"
        ) from None


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    box: SecretBox
    core: Core
    identity: MsalIdentityProvider
    scheduler: DeviceFlowScheduler
    chat: ChatRouter
    supervisor: Supervisor
    slack: SlackBot | None = None
    teams: TeamsParts | None = None
    metrics: ProcessMetrics = field(default_factory=ProcessMetrics)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: TokenService | None = None  # the token API (issue 15)
    webhooks: WebhookDelivery | None = None  # None: no receiver configured

    @property
    def intake(self) -> ErrorIntake:
        return ErrorIntake(self.uow, self.core.monitor, self.core.service.clock)

    def uow(self, read_only: bool = False, one_write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.box, read_only, one_write)


def smtp_mailer(settings: Settings) -> SmtpMailer | None:
    """The SMTP mailer, when RENEWBOT_EMAIL__HOST is set (the password is unwrapped here)."""
    conf = settings.email
    if not conf.enabled:
        return None
    return SmtpMailer(
        SmtpConfig(
            host=conf.host,
            port=conf.port,
            sender=conf.sender,
            tls=conf.tls,
            user=conf.user,
            password=conf.password.get_secret_value() if conf.password else "",
            sender_name=conf.sender_name,
            reply_to=conf.reply_to,
            ca_bundle=conf.ca_bundle,
            timeout=conf.timeout_seconds,
        )
    )


def _hours(value: float) -> timedelta | None:
    return timedelta(hours=value) if value > 0 else None


def chase_config(settings: Settings) -> ChaseConfig:
    c = settings.chase
    return ChaseConfig(
        remind_after=_hours(c.remind_after_hours),
        mention_after=_hours(c.mention_after_hours),
        mention_after_lapses=c.mention_after_lapsed_codes,
        warn_before_expiry=_hours(c.warn_hours_before_expiry),
    )


@asynccontextmanager
async def runtime(
    settings: Settings,
    clock: Clock | None = None,
    *,
    migrate: bool = True,
    mailer: Mailer | None = None,
) -> AsyncIterator[Runtime]:
    """Build every adapter from settings; close them on exit. ``mailer`` replaces SMTP (the
    demo's local mailbox)."""
    clock = clock or SystemClock()
    box = secret_box(settings)
    engine = make_engine(settings.database.url, settings.database.pool_size)
    if migrate:
        await upgrade(engine)
    ident = settings.identity
    identity = MsalIdentityProvider(
        authority_host=ident.authority_host,
        client_id=ident.client_id,
        token_sets=ident.token_sets,
        graph_url=ident.graph_url,
        cache_store=SqlTokenCacheStore(engine, box),
        clock=clock,
        ca_bundle=ident.ca_bundle,
        pool_size=ident.pool_size,
        check_pool_size=settings.monitor.pool_size,
        timeout=ident.timeout_seconds,
        callback_url=f"{settings.web.public_url.rstrip('/')}/onboard/callback",
    )
    chat = ChatRouter()
    config = ServiceConfig(
        public_url=settings.web.public_url,
        invitation_ttl=timedelta(hours=settings.security.invitation_ttl_hours),
        poll_lease=timedelta(seconds=settings.identity.poll_lease_seconds),
        browser_sign_in=settings.signin.browser,
        browser_sign_in_ttl=timedelta(minutes=settings.signin.ttl_minutes),
    )
    core = compose(
        uow=functools.partial(SqlUnitOfWork, engine, box),
        identity=identity,
        threads=chat,
        clock=clock,
        config=config,
        monitor=MonitorConfig(
            check_every=timedelta(hours=settings.monitor.check_every_hours),
            warn_before=timedelta(days=settings.monitor.warn_before_days),
            concurrency=settings.monitor.concurrency,
        ),
        policy=AccessPolicy.of(
            settings.access.operators,
            settings.access.viewers,
            settings.access.channels,
            settings.access.workspaces,
        ),
        mailer=mailer or smtp_mailer(settings),
        mail=MailConfig(
            organization=settings.email.organization,
            remind_after=_hours(settings.chase.remind_after_hours),
        ),
        chase=chase_config(settings),
    )
    scheduler = core.scheduler
    assert scheduler is not None  # compose made it (no watch_flow given)
    supervisor = Supervisor()
    session = aiohttp.ClientSession(trust_env=False)  # one connection pool for chat APIs
    slack = _slack(settings, core, chat, supervisor, session)
    teams = _teams(settings, core, chat, supervisor, engine, session)
    uow = functools.partial(SqlUnitOfWork, engine, box)
    tokens = token_api(settings, engine, identity, uow, core, clock)
    webhooks = webhook_delivery(settings, engine, uow, core, clock)
    try:
        yield Runtime(
            settings, engine, box, core, identity, scheduler, chat, supervisor, slack, teams,
            tokens=tokens, webhooks=webhooks,
        )  # fmt: skip
    finally:
        await supervisor.close()
        if tokens is not None:
            await tokens.grants.close()  # type: ignore[attr-defined]  # the audit not yet written
        if webhooks is not None:
            await webhooks.sender.close()  # type: ignore[attr-defined]
        await session.close()
        await identity.close()
        await engine.dispose()


def token_api(
    settings: Settings,
    engine: AsyncEngine,
    identity: MsalIdentityProvider,
    uow: UnitOfWorkFactory,
    core: Core,
    clock: Clock,
) -> TokenService | None:
    conf = settings.tokens
    if not conf.enabled:
        return None
    config = TokenApiConfig(
        min_left=timedelta(seconds=conf.min_left_seconds),
        lease=timedelta(seconds=conf.lease_seconds),
        wait=timedelta(seconds=conf.wait_seconds),
        key_cache=timedelta(seconds=conf.key_cache_seconds),
    )
    grants = SqlTokenGrants(engine, conf.audit_flush_seconds)
    return TokenService(grants, identity, uow, core.monitor, clock, config)


def webhook_delivery(
    settings: Settings, engine: AsyncEngine, uow: UnitOfWorkFactory, core: Core, clock: Clock
) -> WebhookDelivery | None:
    """The webhook worker, when receivers are configured (events are stored regardless)."""
    conf = settings.webhooks
    if not conf.endpoints:
        return None
    raw = conf.secrets.get_secret_value() if conf.secrets else ""
    try:
        sender = StandardWebhookSender([s for s in raw.split(",") if s.strip()])
    except ValueError:
        raise ConfigurationError(
            "RENEWBOT_WEBHOOKS__SECRETS holds a value that is not a whsec_ secret "
            "(`renewbot keys webhook-secret` makes one)"
        ) from None
    config = DeliveryConfig(
        endpoints=tuple(conf.endpoints),
        first_retry=timedelta(seconds=conf.first_retry_seconds),
        max_retry=timedelta(seconds=conf.max_retry_seconds),
        alert_after=conf.alert_after,
    )
    return WebhookDelivery(
        SqlWebhookQueue(engine), sender, uow, core.monitor.notifier, clock, config
    )
