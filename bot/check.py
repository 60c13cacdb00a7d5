"""`renewbot check` and the start's plain words: what is wrong with a configuration, one line each.

``diagnose`` looks at everything a start needs without starting: settings, keys, the database
(reachable, migrated), whether the keys open the stored token caches, the chat platforms and the
identity authority. ``explain`` turns an exception met while starting (a database that refuses,
a key that is no Fernet key, a missing driver) into one line naming the variable and what to do.

Never prints a setting's value: database URLs are shown without user and password, keys and
tokens not at all.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.storage.database import make_engine, schema_revision
from adapters.storage.token_cache import SqlTokenCacheStore
from bot.bootstrap import ConfigurationError, secret_box
from bot.settings import Settings

Level = Literal["ok", "warn", "error", "info"]
DB = "RENEWBOT_DATABASE__URL"


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str

    def __str__(self) -> str:
        return f"[{self.level}]".ljust(8) + self.text


def where(url: str) -> str:
    """The database a URL names, without user or password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the database"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    port = f":{parsed.port}" if parsed.port else ""
    return f"PostgreSQL at {parsed.host}{port}/{parsed.database or ''}"


def _missing_sqlite_file(url: str) -> bool:
    """A SQLite URL whose file is not there (in-memory databases are never missing)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    name = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and name not in ("", ":memory:")
        and not Path(name).exists()
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "orig", None)]


def explain(exc: BaseException, url: str) -> str | None:
    """One line for a start-up failure the operator can fix, or None (a bug: keep the trace)."""
    place = where(url)
    for item in _chain(exc):
        name = type(item).__name__
        if isinstance(item, ConfigurationError):
            return str(item)
        if isinstance(item, ModuleNotFoundError):
            return f"{DB} needs the Python package {item.name}, which is not installed"
        if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
            return f"{place} refused the user name or password in {DB}"
        if name == "InvalidCatalogNameError":
            return f"{place} does not exist: create it, or fix the database name in {DB}"
        if isinstance(item, socket.gaierror):
            return f"cannot find the database host of {DB} ({place}): check the host name"
        if isinstance(item, ConnectionRefusedError):
            return f"{place} refuses connections: is it running, and is {DB} right?"
        if isinstance(item, TimeoutError):
            return f"{place} did not answer in time: is the host reachable from here?"
        if "unable to open database file" in str(item):
            return f"cannot open the {place}: does its folder exist and is it writable?"
        if name == "CommandError" and "Can't locate revision" in str(item):
            return (
                f"{place} was migrated by a newer renewbot: run that version, or restore a "
                "backup taken before its upgrade"
            )
        if isinstance(item, ArgumentError):
            return f"{DB} is not a database URL"
        if isinstance(item, OSError) and item.strerror:
            return f"cannot reach {place} ({item.strerror}): check {DB}"
    return None


async def schema_gap(engine: object, url: str) -> str | None:
    """What to run when the database is not at this version's schema; None when it is."""
    quiet = logging.getLogger("alembic.runtime.migration")  # "Context impl ..." is noise here
    level, quiet.level = quiet.level, logging.WARNING
    try:
        current, head = await schema_revision(engine)  # type: ignore[arg-type]
    finally:
        quiet.level = level
    if current == head:
        return None
    if current is None:
        return f"{where(url)} has no renewbot tables yet: run `renewbot db upgrade` first"
    if current < head:
        return (
            f"{where(url)} is at schema {current}, this renewbot needs {head}: "
            "run `renewbot db upgrade`"
        )
    return f"{where(url)} is at schema {current}, newer than this renewbot ({head}): upgrade it"


async def diagnose(settings: Settings) -> list[Finding]:
    """Everything `renewbot serve` needs, checked without starting it."""
    found = [Finding("error", p) for p in settings.problems()]
    found += [Finding("warn", w) for w in settings.warnings()]
    if not found:
        found.append(Finding("ok", f"settings: complete for {settings.environment}"))
    try:
        box = secret_box(settings)
        raw = settings.security.encryption_keys
        count = len([k for k in (raw.get_secret_value() if raw else "").split(",") if k.strip()])
        found.append(Finding("ok", f"keys: {count} Fernet key(s), the first encrypts"))
    except ConfigurationError as exc:
        box = None
        if not any("ENCRYPTION_KEYS" in f.text for f in found):
            found.append(Finding("error", str(exc)))
    found += await _database(settings, box)
    found += _chat(settings)
    found.append(await _authority(settings))
    return found


async def _database(settings: Settings, box: object) -> list[Finding]:
    url = settings.database.url
    missing = _missing_sqlite_file(url)
    if missing:  # connecting would create it: `check` changes nothing
        return [Finding("error", f"{where(url)} does not exist yet: run `renewbot db upgrade`")]
    engine = make_engine(url)
    try:
        async with asyncio.timeout(10):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            gap = await schema_gap(engine, url)
        if gap:
            return [Finding("error", gap)]
        said = [Finding("ok", f"database: {where(url)} reachable, schema current")]
        if box is not None:
            checked, bad = await SqlTokenCacheStore(engine, box).unreadable()  # type: ignore[arg-type]
            if checked and len(bad) == checked:
                said.append(
                    Finding(
                        "error",
                        f"RENEWBOT_SECURITY__ENCRYPTION_KEYS opens none of the {checked} stored "
                        "token caches: use the keys they were saved with",
                    )
                )
            elif bad:
                said.append(
                    Finding(
                        "warn",
                        f"token caches: {len(bad)} of {checked} do not open with these keys; "
                        "their tenants will need a renewal",
                    )
                )
            else:
                said.append(Finding("ok", f"token caches: the keys open all {checked}"))
        return said
    except Exception as exc:  # any failure is a finding; unknown ones keep their type name
        return [Finding("error", explain(exc, url) or f"{where(url)}: {type(exc).__name__}")]
    finally:
        await engine.dispose()


def _chat(settings: Settings) -> list[Finding]:
    slack, teams = settings.slack, settings.teams
    said = []
    if slack.bot_token is None:
        said.append(Finding("info", "slack: not configured"))
    else:
        mode = "Socket Mode" if slack.app_token else "HTTP mode, POST /slack/events"
        alerts = f"alerts to {slack.alert_channel}" if slack.alert_channel else "no alert channel"
        said.append(Finding("ok", f"slack: {mode}; {alerts}"))
    if not teams.enabled:
        said.append(Finding("info", "teams: not configured"))
    else:
        who = "anonymous (development)" if teams.allow_anonymous else f"app {teams.app_id}"
        alerts = (
            f"alerts to {teams.alert_conversation}"
            if teams.alert_conversation
            else "no alert conversation"
        )
        said.append(Finding("ok", f"teams: {who}, POST /api/messages; {alerts}"))
    return said


async def _authority(settings: Settings) -> Finding:
    """Can this host reach the identity authority (its OpenID metadata)?"""
    host = settings.identity.authority_host.rstrip("/")
    url = f"{host}/organizations/v2.0/.well-known/openid-configuration"
    ctx = ssl.create_default_context(cafile=settings.identity.ca_bundle or None)
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            async with http.get(url, ssl=ctx, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.strerror:
            reason = exc.os_error.strerror.lower()
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = "its TLS certificate is not trusted (RENEWBOT_IDENTITY__CA_BUNDLE?)"
        return Finding("error", f"identity: cannot reach {host}: {reason}")
    if status >= 500:
        return Finding("error", f"identity: {host} answered HTTP {status}")
    return Finding("ok", f"identity: {host} reachable")
