"""The token API's rules: which service may have which tenant's token, and getting it once.

A request names a tenant (slug, name, domain or id) and a token set. The service's key must be
live (401), allow that set and tenant (403) and stay within its rate (429). The token comes from
memory while it has more than ``min_left`` to live, else from the tenant's stored cache, else it
is refreshed: one request per process does the work (the others await it), and one process
across replicas holds the database lease for that tenant and set; the rest re-read the stored
cache until the new token is there. A refusal is recorded as an identity error like any other
(and a dead refresh token marks the tenant expired, as the monitor would): 409 with the tenant's
state and what support should do. Microsoft unreachable: 503 with a retry delay. Every issued
token is audited (service, tenant, set, time), never the token. Standard library only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core import identity_codes, registration
from core.errors import IdentityProviderError, TokenCacheUnreadableError
from core.health import HealthMonitor
from core.model import AuthState, Tenant
from core.ports import (
    AccessToken,
    Clock,
    IdentityErrorRecord,
    ServiceKey,
    TokenGrants,
    TokenIssue,
    TokenSource,
    UnitOfWorkFactory,
)

KEY_PREFIX = "rbk_"
# OAuth errors after which the stored refresh token is of no use (as the monitor judges them).
DEAD = frozenset({"invalid_grant", "unreadable"})
_ID_LEN = 12


class TokenApiError(Exception):
    """An answer other than a token; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadKeyError(TokenApiError):
    status = 401


class NotAllowedError(TokenApiError):
    status = 403


class NotFoundError(TokenApiError):
    status = 404


class RateLimitedError(TokenApiError):
    status = 429


class RenewalNeededError(TokenApiError):
    """The tenant's tokens cannot be had until support acts (usually a renewal)."""

    status = 409

    def __init__(self, tenant: Tenant, state: AuthState, code: str, renewal: str | None) -> None:
        entry = identity_codes.lookup(code)
        super().__init__(entry.title)
        self.tenant, self.state, self.code, self.renewal = tenant, state, code, renewal
        self.support = entry.support


class UnavailableError(TokenApiError):
    status = 503


@dataclass(frozen=True)
class TokenApiConfig:
    min_left: timedelta = timedelta(minutes=5)  # MSAL's own margin (FIELD-NOTES)
    lease: timedelta = timedelta(seconds=30)  # longer than one refresh (identity timeout 10 s)
    wait: timedelta = timedelta(seconds=15)  # how long a request waits for another's refresh
    recheck: float = 0.15  # seconds between re-reads of the stored cache while waiting
    key_cache: timedelta = timedelta(seconds=30)  # a revoked key works at most this long
    remember_refusal: timedelta = timedelta(seconds=30)
    retry_after: int = 30
    worker_id: str = field(default_factory=lambda: secrets.token_hex(8))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    service: str,
    tenants: tuple[str, ...],
    token_sets: tuple[str, ...],
    rate_per_minute: int,
    now: datetime,
) -> tuple[ServiceKey, str]:
    """A key and the text the service presents (shown once; only its hash is stored)."""
    key_id, secret = secrets.token_hex(_ID_LEN // 2), secrets.token_urlsafe(32)
    key = ServiceKey(
        key_id, service, hash_secret(secret), tenants, token_sets, rate_per_minute, now
    )
    return key, f"{KEY_PREFIX}{key_id}_{secret}"


@dataclass(frozen=True)
class Issued:
    token: AccessToken
    tenant: Tenant
    token_set: str
    service: str


class _Bucket:
    """A token bucket: ``rate`` per minute, bursts of up to ten seconds' worth."""

    def __init__(self, rate: int, now: datetime) -> None:
        self.per_second = rate / 60.0
        self.capacity = max(1.0, self.per_second * 10)
        self.level, self.at = self.capacity, now

    def take(self, now: datetime) -> float:
        """0 when allowed, else seconds until a request would be."""
        elapsed = (now - self.at).total_seconds()
        self.level = min(self.capacity, self.level + elapsed * self.per_second)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.per_second


class TokenService:
    def __init__(
        self,
        grants: TokenGrants,
        source: TokenSource,
        uow: UnitOfWorkFactory,
        monitor: HealthMonitor,
        clock: Clock,
        config: TokenApiConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.grants, self.source, self.uow = grants, source, uow
        self.monitor, self.clock = monitor, clock
        self.config = config or TokenApiConfig()
        self.sleep = sleep
        self._keys: dict[str, tuple[ServiceKey | None, datetime]] = {}
        self._tenants: dict[str, tuple[Tenant | None, datetime]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._tokens: dict[tuple[str, str], AccessToken] = {}
        self._refusals: dict[tuple[str, str], tuple[TokenApiError, datetime]] = {}
        self._flights: dict[tuple[str, str], asyncio.Future[AccessToken]] = {}
        self.refreshes = 0  # refreshes this process made (bench, tests)

    async def authenticate(self, presented: str) -> ServiceKey:
        """The live key behind ``presented``. Raises BadKeyError."""
        wrong = BadKeyError("missing, unknown or revoked service key")
        if not presented.startswith(KEY_PREFIX) or presented[4 + _ID_LEN : 5 + _ID_LEN] != "_":
            raise wrong
        key_id, secret = presented[4 : 4 + _ID_LEN], presented[5 + _ID_LEN :]
        now = self.clock.now()
        cached = self._keys.get(key_id)
        if cached is None or now - cached[1] > self.config.key_cache:
            cached = (await self.grants.key(key_id), now)
            self._keys[key_id] = cached
        key = cached[0]
        if key is None or key.revoked_at is not None:
            raise wrong
        if not hmac.compare_digest(hash_secret(secret), key.secret_hash):
            raise wrong
        return key

    async def issue(self, presented: str, tenant_ref: str, token_set: str) -> Issued:
        """An access token for the key's service. Raises a TokenApiError."""
        key = await self.authenticate(presented)
        now = self.clock.now()
        bucket = self._buckets.get(key.key_id)
        if bucket is None:
            bucket = self._buckets[key.key_id] = _Bucket(key.rate_per_minute, now)
        wait = bucket.take(now)
        if wait:
            raise RateLimitedError("rate limit of this service key", retry_after=int(wait) + 1)
        if token_set not in self.source.token_set_names():
            raise NotFoundError(f"no token set {token_set[:40]!r}")
        if key.token_sets and token_set not in key.token_sets:
            raise NotAllowedError("this key may not have that token set")
        tenant = await self._tenant(tenant_ref, now)
        if tenant is None:
            if key.tenants:  # a restricted key does not learn which tenants exist
                raise NotAllowedError("this key may not have that tenant's tokens")
            raise NotFoundError("no such tenant")
        if key.tenants and tenant.key not in key.tenants:
            raise NotAllowedError("this key may not have that tenant's tokens")
        token = await self.token(tenant, token_set)
        await self.grants.issued(
            TokenIssue(
                self.clock.now(),
                key.key_id,
                key.service,
                tenant.key,
                token_set,
                token.expires_at,
                token.refreshed,
            )
        )
        return Issued(token, tenant, token_set, key.service)

    async def _tenant(self, ref: str, now: datetime) -> Tenant | None:
        ref = ref.strip().lower()
        if not ref or len(ref) > 253:
            return None
        cached = self._tenants.get(ref)
        if cached is None or now - cached[1] > self.config.key_cache:
            async with self.uow(read_only=True) as uow:
                cached = (await uow.tenants.find_exact(ref), now)
            self._tenants[ref] = cached
        return cached[0]

    async def token(self, tenant: Tenant, token_set: str) -> AccessToken:
        """From memory, the stored cache or one refresh. Raises a TokenApiError."""
        slot = (tenant.tenant_id, token_set)
        now = self.clock.now()
        held = self._tokens.get(slot)
        if held is not None and held.expires_at - now > self.config.min_left:
            return AccessToken(
                held.token, held.expires_at, held.scopes, held.tenant_id, held.account
            )
        refused = self._refusals.get(slot)
        if refused is not None and refused[1] > now:
            raise refused[0]
        flight = self._flights.get(slot)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._flights[slot] = flight
            try:
                token = await self._fetch(tenant, token_set)
                self._tokens[slot] = token
                flight.set_result(token)
            except BaseException as exc:
                flight.set_exception(exc)
                flight.exception()  # retrieved: nobody else may be waiting
                raise
            finally:
                del self._flights[slot]
            return token
        got = await asyncio.shield(flight)
        return AccessToken(got.token, got.expires_at, got.scopes, got.tenant_id, got.account)

    async def _fetch(self, tenant: Tenant, token_set: str) -> AccessToken:
        slot = (tenant.tenant_id, token_set)
        try:
            return await self._stored_or_refreshed(tenant, token_set)
        except IdentityProviderError as exc:
            error = await self._refused(tenant, exc)
        except TokenCacheUnreadableError:
            why = "no configured key opens the stored token cache, or it was altered"
            unreadable = IdentityProviderError(TokenCacheUnreadableError.code, "unreadable", why)
            error = await self._refused(tenant, unreadable)
        memory = self.config.remember_refusal if error.status == 409 else timedelta(seconds=5)
        self._refusals[slot] = (error, self.clock.now() + memory)
        raise error

    async def _stored_or_refreshed(self, tenant: Tenant, token_set: str) -> AccessToken:
        c = self.config
        deadline = self.clock.now() + c.wait
        while True:
            cached = await self.source.cached_access_token(tenant, token_set, c.min_left)
            if cached is not None:
                return cached
            now = self.clock.now()
            owner = c.worker_id
            tid = tenant.tenant_id
            if await self.grants.claim_refresh(tid, token_set, owner, now + c.lease, now):
                try:
                    token = await self.source.access_token(tenant, token_set, c.min_left)
                finally:
                    await self.grants.release_refresh(tid, token_set, owner)
                self.refreshes += int(token.refreshed)
                return token
            if now >= deadline:
                raise UnavailableError(
                    "another replica is refreshing this token; try again", c.retry_after
                )
            await self.sleep(c.recheck * random.uniform(0.7, 1.3))

    async def _refused(self, tenant: Tenant, exc: IdentityProviderError) -> TokenApiError:
        """Record the failure like any identity error; the answer that says what it means."""
        async with self.uow() as uow:
            await uow.identity_errors.add(
                IdentityErrorRecord.of(self.clock.now(), tenant.key, exc, "token-api")
            )
            await uow.commit()
        m = self.monitor
        if identity_codes.is_app_wide(exc.code):
            await registration.report(m.uow, m.notifier, self.clock, exc.code)
            return UnavailableError(identity_codes.lookup(exc.code).support, 300)
        if exc.is_transient:
            return UnavailableError(
                "Microsoft's identity service is not answering; try again later",
                self.config.retry_after,
            )
        async with self.uow(read_only=True) as uow:  # as it is now, not as cached
            tenant = await uow.tenants.get(tenant.key) or tenant
            renewal = await uow.renewals.active_for(tenant.key)
        state = tenant.auth_state
        if identity_codes.kills_refresh_token(exc.code) or exc.error in DEAD:
            await m.mark_expired(tenant, exc.code)  # announces only a change
            state = AuthState.EXPIRED
        return RenewalNeededError(tenant, state, exc.code, renewal.state.value if renewal else None)
