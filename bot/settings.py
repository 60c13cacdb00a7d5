"""Settings from the environment: prefix RENEWBOT_, groups separated by "__".

Every external base URL defaults to the real service; tests and the demo point them at loopback
stand-ins. Secrets are SecretStr and are unwrapped only in bot.bootstrap; each has a ``*_FILE``
variant read from a mounted file (bot.settings_env). Only bot/ reads the environment.

``load()`` is how the CLI reads them: a bad value becomes one line naming the variable, never
its value. ``problems()`` refuses a production start, ``warnings()`` only warns.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from bot.settings_env import SecretFiles, describe, unparsable_json
from bot.settings_env import SettingsError as SettingsError

DEFAULT_TOKEN_SETS: dict[str, list[str]] = {
    "graph": ["https://graph.microsoft.com/.default"],
    "exchange": ["https://outlook.office365.com/.default"],
    "sharepoint": ["https://{tenant}-admin.sharepoint.com/.default"],
}


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./renewbot.db"
_DRIVERS = {"postgresql": "postgresql+asyncpg://", "postgres": "postgresql+asyncpg://"}


class DatabaseSettings(BaseModel):
    # holds the password: RENEWBOT_DATABASE__URL_FILE reads it from a mounted secret
    url: str = Field(default=DEFAULT_DATABASE_URL, json_schema_extra={"secret": True})
    # PostgreSQL connections each process keeps open, and the most it opens. The server's
    # max_connections must cover replicas x pool_size + tools.
    pool_size: int = Field(default=30, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        # The message may show the scheme, never the rest (it holds the password).
        scheme = value.split("://", 1)[0].strip().lower() if "://" in value else ""
        if scheme in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            return value
        base = scheme.split("+", 1)[0]
        if base in _DRIVERS:
            raise ValueError(
                f"must start with postgresql+asyncpg:// (renewbot talks to PostgreSQL through "
                f"asyncpg), not {scheme}://"
            )
        if base == "sqlite":
            raise ValueError("must start with sqlite+aiosqlite:/// for SQLite, not sqlite://")
        raise ValueError(
            "must be a postgresql+asyncpg://user:password@host:5432/database URL "
            "(or sqlite+aiosqlite:///path/renewbot.db for one process)"
        )


class WebSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    # Reverse proxies in front of the bot (addresses or CIDR ranges). Only a request from one of
    # them has its X-Forwarded-For believed when rate limiting per client; empty: the peer is
    # the client.
    trusted_proxies: list[str] = Field(default_factory=list)


class SlackSettings(BaseModel):
    signing_secret: SecretStr | None = None
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    alert_channel: str | None = None
    command: str = "/renew-token"


class TeamsSettings(BaseModel):
    """Microsoft Teams. On when app_id is set, or in development with allow_anonymous."""

    app_id: str = ""
    app_password: SecretStr | None = None
    openid_metadata_url: str = "https://login.botframework.com/v1/.well-known/openidconfiguration"
    login_url: str = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
    alert_conversation: str | None = None
    # Development only (Agents Playground, Emulator): accept activities without a token and send
    # replies without one. A production start refuses it.
    allow_anonymous: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.app_id) or self.allow_anonymous


class IdentitySettings(BaseModel):
    authority_host: str = "https://login.microsoftonline.com"
    client_id: str = ""
    ca_bundle: str | None = None
    graph_url: str = "https://graph.microsoft.com"
    token_sets: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_TOKEN_SETS))
    # MSAL's threads for sign-ins (device flows) and validation; they only wait for answers
    # (requests run on the event loop). Health checks have their own: MONITOR__POOL_SIZE.
    pool_size: int = Field(default=8, ge=1, le=64)
    timeout_seconds: float = Field(default=10.0, gt=0)
    poll_lease_seconds: float = Field(default=30.0, gt=0)


class SignInSettings(BaseModel):
    """How customers sign in on the onboarding page, and the names that help them trust it.

    ``ways``: "both" (Sign in with Microsoft first, the device code as the fallback), "browser"
    or "device_code". The device code stays available to support (`renew-token code`) whatever
    this says. ``app_name`` and ``publisher`` are what Microsoft's sign-in and consent screens
    show for the app registration; ``msp_name`` is who asks. The page names all three.
    """

    ways: Literal["both", "browser", "device_code"] = "both"
    app_name: str = "renewbot"
    publisher: str = ""
    msp_name: str = ""
    ttl_minutes: int = Field(default=10, ge=1, le=60)

    @field_validator("ways", mode="before")
    @classmethod
    def _ways(cls, value: object) -> object:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @property
    def browser(self) -> bool:
        return self.ways in {"both", "browser"}

    @property
    def device_code(self) -> bool:
        return self.ways in {"both", "device_code"}


class SecuritySettings(BaseModel):
    encryption_keys: SecretStr | None = None
    invitation_ttl_hours: int = Field(default=168, ge=1, le=24 * 30)


class MonitorSettings(BaseModel):
    """The token health monitor and the MSAL error intake."""

    enabled: bool = True
    sweep_every_seconds: float = Field(default=300.0, gt=0)
    check_every_hours: float = Field(default=24.0, gt=0)
    warn_before_days: int = Field(default=14, ge=1, le=89)
    concurrency: int = Field(default=64, ge=1, le=256)
    # Threads for health checks, apart from sign-ins: each check holds one for a round trip to
    # Microsoft, so 16 threads at 50 ms check about 200 tenants a second (bench/health.py).
    pool_size: int = Field(default=16, ge=1, le=64)
    api_keys: SecretStr | None = None  # comma-separated bearer keys for POST /api/msal-errors


class EmailSettings(BaseModel):
    """SMTP for the invitation email and its reminder. Off while ``host`` is empty: the thread
    then tells support to send the Auth URL by hand."""

    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"  # implicit: port 465
    user: str = ""
    password: SecretStr | None = None
    sender: str = ""  # the From address, e.g. support@msp.example
    sender_name: str = ""
    reply_to: str = ""
    organization: str = "your IT support provider"  # who the customer knows, named in emails
    ca_bundle: str | None = None  # a private CA for the mail server's certificate
    timeout_seconds: float = Field(default=30.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.host)


class ChaseSettings(BaseModel):
    """Chasing a stalled customer; 0 turns a step off."""

    remind_after_hours: float = Field(default=24.0, ge=0)  # link not opened: reminder email
    mention_after_hours: float = Field(default=4.0, ge=0)  # opened, no sign-in: mention
    mention_after_lapsed_codes: int = Field(default=2, ge=0)  # codes expired unused: mention
    warn_hours_before_expiry: float = Field(default=24.0, ge=0)  # tell support, once
    sweep_every_seconds: float = Field(default=60.0, gt=0)


class AccessSettings(BaseModel):
    """Who may do what. Empty operators and viewers: everyone may operate (development)."""

    operators: list[str] = Field(default_factory=list)
    viewers: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    workspaces: list[str] = Field(default_factory=list)


class LogSettings(BaseModel):
    """Logging: level (DEBUG turns on every library's logger too, redacted) and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class TokenApiSettings(BaseModel):
    """The token API (GET /api/tokens/{tenant}/{set}) for the platform's services."""

    enabled: bool = True
    min_left_seconds: float = Field(default=300.0, ge=60)  # refresh when less is left
    lease_seconds: float = Field(default=30.0, gt=0)  # one replica's refresh of a token set
    wait_seconds: float = Field(default=15.0, gt=0)  # a request waiting for another's refresh
    key_cache_seconds: float = Field(default=30.0, ge=0)  # a revoked key stops within this
    default_rate_per_minute: int = Field(default=600, ge=1)
    # Audit rows of issued tokens are written this long after the answer, together (0: each
    # answer waits for its row; costs about 500 us of CPU per request on SQLite).
    audit_flush_seconds: float = Field(default=0.1, ge=0, le=10)


class WebhookSettings(BaseModel):
    """Signed webhooks (Standard Webhooks) to the platform's services."""

    endpoints: list[str] = Field(default_factory=list)  # receivers' URLs (a JSON list)
    secrets: SecretStr | None = None  # comma-separated whsec_... secrets; each signs
    first_retry_seconds: float = Field(default=5.0, gt=0)
    max_retry_seconds: float = Field(default=3600.0, gt=0)
    alert_after: int = Field(default=5, ge=1)  # failed attempts before the alert channel hears
    poll_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _secret_with_endpoints(self) -> WebhookSettings:
        if self.endpoints and (self.secrets is None or not self.secrets.get_secret_value()):
            raise ValueError("RENEWBOT_WEBHOOKS__SECRETS must be set with ENDPOINTS")
        for url in self.endpoints:
            if urlsplit(url).scheme not in {"http", "https"}:
                raise ValueError("RENEWBOT_WEBHOOKS__ENDPOINTS holds a URL that is not http(s)")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RENEWBOT_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["production", "development"] = "production"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    teams: TeamsSettings = Field(default_factory=TeamsSettings)
    identity: IdentitySettings = Field(default_factory=lambda: IdentitySettings())
    security: SecuritySettings = Field(default_factory=lambda: SecuritySettings())
    access: AccessSettings = Field(default_factory=AccessSettings)
    monitor: MonitorSettings = Field(default_factory=lambda: MonitorSettings())
    log: LogSettings = Field(default_factory=LogSettings)
    signin: SignInSettings = Field(default_factory=SignInSettings)
    tokens: TokenApiSettings = Field(default_factory=lambda: TokenApiSettings())
    webhooks: WebhookSettings = Field(default_factory=lambda: WebhookSettings())
    email: EmailSettings = Field(default_factory=lambda: EmailSettings())
    chase: ChaseSettings = Field(default_factory=lambda: ChaseSettings())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: explicit arguments, then variables, then *_FILE secrets.
        return (
            init_settings,
            env_settings,
            SecretFiles(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def has_chat(self) -> bool:
        return self.slack.bot_token is not None or self.teams.enabled

    def problems(self) -> list[str]:
        """What stops a production start, each naming the variable and never its value."""
        found = []
        if (
            self.security.encryption_keys is None
            or not self.security.encryption_keys.get_secret_value().strip()
        ):
            found.append(
                "RENEWBOT_SECURITY__ENCRYPTION_KEYS is not set (comma-separated Fernet "
                "keys; `renewbot keys generate` makes one)"
            )
        if not self.identity.client_id:
            found.append("RENEWBOT_IDENTITY__CLIENT_ID is not set (the MSP app registration)")
        slack = self.slack
        if slack.bot_token and not slack.signing_secret and not slack.app_token:
            found.append(
                "RENEWBOT_SLACK__SIGNING_SECRET is not set (needed to verify requests "
                "from Slack; or set RENEWBOT_SLACK__APP_TOKEN for Socket Mode)"
            )
        if (slack.signing_secret or slack.app_token) and not slack.bot_token:
            found.append("RENEWBOT_SLACK__BOT_TOKEN is not set (the xoxb- token of the Slack app)")
        for entry in self.web.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                found.append(
                    f"RENEWBOT_WEB__TRUSTED_PROXIES: {entry[:60]!r} is not an address or range"
                )
        teams = self.teams
        if teams.app_id and not teams.app_password:
            found.append(
                "RENEWBOT_TEAMS__APP_PASSWORD is not set (the client secret of the bot's "
                "Microsoft app registration)"
            )
        mail = self.email
        if mail.enabled and not mail.sender:
            found.append("RENEWBOT_EMAIL__SENDER is not set (the From address of invitations)")
        if mail.enabled and mail.user and mail.password is None:
            found.append("RENEWBOT_EMAIL__PASSWORD is not set (RENEWBOT_EMAIL__USER is)")
        if self.environment == "production":
            if mail.enabled and mail.tls == "none" and not _is_loopback(f"smtp://{mail.host}"):
                found.append(
                    "RENEWBOT_EMAIL__TLS is none: invitations carry a sign-in link, so the mail "
                    "server must be reached with starttls or implicit TLS"
                )
            if teams.allow_anonymous:
                found.append(
                    "RENEWBOT_TEAMS__ALLOW_ANONYMOUS is on: unauthenticated Teams requests are "
                    "for development only (set RENEWBOT_ENVIRONMENT=development)"
                )
            if _is_loopback(self.identity.authority_host):
                found.append(
                    "RENEWBOT_IDENTITY__AUTHORITY_HOST points at this machine: the "
                    "sandbox identity provider is for the demo and tests only"
                )
            if not self.web.public_url.startswith("https://"):
                found.append("RENEWBOT_WEB__PUBLIC_URL must be an https:// URL in production")
        return found

    def warnings(self) -> list[str]:
        """What a production start allows but an operator should know: it starts anyway, and
        `renewbot serve` says each in one line naming the variable (issue 17: warnings, not
        refusals, so a first start shows the onboarding page before chat is wired up)."""
        if self.environment != "production":
            return []
        found = []
        if "url" not in self.database.model_fields_set:
            found.append(
                "RENEWBOT_DATABASE__URL is not set: tokens go to ./renewbot.db (SQLite, one "
                "process only); set postgresql+asyncpg://user:password@host:5432/renewbot"
            )
        elif self.database.url.startswith("sqlite"):
            found.append(
                "RENEWBOT_DATABASE__URL is SQLite: one process only; run more than one replica "
                "on PostgreSQL"
            )
        if not self.has_chat:
            found.append(
                "neither Slack nor Teams is configured: set RENEWBOT_SLACK__BOT_TOKEN (and "
                "RENEWBOT_SLACK__SIGNING_SECRET or RENEWBOT_SLACK__APP_TOKEN) or "
                "RENEWBOT_TEAMS__APP_ID and RENEWBOT_TEAMS__APP_PASSWORD; nobody can ask for a "
                "renewal until then"
            )
        elif not (
            (self.slack.bot_token is not None and self.slack.alert_channel)
            or (self.teams.enabled and self.teams.alert_conversation)
        ):
            found.append(
                "no alert channel: set RENEWBOT_SLACK__ALERT_CHANNEL (a channel id such as "
                "C0123456789) or RENEWBOT_TEAMS__ALERT_CONVERSATION (19:...@thread.tacv2), "
                "where expired tenants and results are announced"
            )
        return found


def load() -> Settings:
    """Settings from the environment, or SettingsError with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc, Settings)) from None
    except SourceError as exc:
        lines = unparsable_json(Settings)
        raise SettingsError(lines or [f"a RENEWBOT_ variable cannot be read: {exc}"]) from None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
