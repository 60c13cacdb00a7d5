"""Bot Framework authentication, both ways, without blocking the event loop.

Inbound: every activity carries a JWT that the Bot Connector signed. ``ChannelTokenValidator``
checks it against the OpenID metadata's signing keys, fetched with aiohttp (botbuilder's own
validator fetches them with a blocking ``requests.get`` on the loop and answers a bad token with
500). Each refusal is a ``ChannelAuthError`` with the HTTP status to send: 401 when the caller did
not prove who it is, 403 when it did but may not do this.

Key fetches never hold a request up behind another: a cached key serves at once (a stale cache
starts a refresh in the background), at most one fetch runs at a time and every caller shares it,
and a request whose key we do not have waits for that fetch only ``key_wait`` seconds, then is
refused with 401. Must not: fetch on a request's own time without a bound, or start a second
fetch while one is running.

Outbound: ``AppTokenSource`` gets the bot's own token (client credentials at the login URL) with
aiohttp and caches it until shortly before it expires. Never logs a token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from core.lru import BoundedCache

log = logging.getLogger("renewbot.teams")

CHANNEL_ISSUER = "https://api.botframework.com"
BOT_SCOPE = "https://api.botframework.com/.default"
# Keys older than this are refreshed (in the background; they keep serving meanwhile): the
# Bot Framework SDK's own refresh interval for the channel's keys.
KEYS_MAX_AGE = 24 * 3600.0
# A key id we do not know refetches at most this often after a good fetch: Microsoft.IdentityModel's
# five-minute refresh interval. Microsoft lists a new key before signing with it, so an unknown id
# soon after a fetch is almost always a forged token, and must not make us hammer the endpoint.
UNKNOWN_KEY_REFETCH = 300.0
# After a failed fetch the next one waits this long, so requests cannot hammer a failing endpoint.
RETRY_AFTER_FAILURE = 30.0
# One refresh (metadata and keys together) gives up after this long.
FETCH_TIMEOUT = 10.0
# How long a request whose key we do not have (first start, or a rotated key) waits for the fetch
# in flight before it is refused with 401. Teams wants the HTTP answer within 15 s and the turn
# still has work to do; a healthy fetch of two small documents takes well under a second, so 3 s
# covers a slow one, while a hanging endpoint costs each such request 3 s, never Teams' timeout.
KEY_WAIT = 3.0
LEEWAY = 300
VERIFIED_CACHE = 1024
# What a metadata or key fetch can fail with: unreachable, refused, or an unexpected document.
FETCH_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError)


class ChannelAuthError(Exception):
    """An inbound request that is not allowed in; ``status`` is 401 or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SigningKey:
    key: Any
    endorsements: frozenset[str]


class ChannelTokenValidator:
    """Validates the Bearer token of an incoming activity.

    Args:
        metadata_url: the channel's OpenID metadata (its ``jwks_uri`` lists the signing keys).
        app_id: the bot's Microsoft app id, the only audience accepted.
        session: an aiohttp session for the metadata and key fetches.
        key_wait: how long a request with a key id we do not have waits for a fetch (KEY_WAIT).
        fetch_timeout: how long one fetch of metadata and keys may take (FETCH_TIMEOUT).
    """

    def __init__(
        self,
        metadata_url: str,
        app_id: str,
        session: aiohttp.ClientSession,
        issuers: tuple[str, ...] = (CHANNEL_ISSUER,),
        key_wait: float = KEY_WAIT,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.metadata_url = metadata_url
        self.app_id = app_id
        self.session = session
        self.issuers = issuers
        self.key_wait = key_wait
        self.fetch_timeout = fetch_timeout
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = float("-inf")  # monotonic time of the last good fetch
        self._failed_at = float("-inf")  # ... and of the last failed one
        self._fetch: asyncio.Task[bool] | None = None  # the one fetch in flight
        # The connector reuses one token for many activities (it lives about an hour): its
        # signature is checked once (an RSA verify costs about 1 ms here), then remembered by
        # hash until it expires. Endorsement and service URL are still checked per request.
        self._verified: BoundedCache[bytes, tuple[dict[str, Any], SigningKey]] = BoundedCache(
            VERIFIED_CACHE
        )

    @property
    def key_count(self) -> int:
        return len(self._keys)

    async def refresh(self) -> None:
        """Fetch the metadata and its keys now. Raises FETCH_ERRORS when unreachable or wrong.

        Requests never call this directly; they share one fetch through ``_start_fetch``.
        """
        async with asyncio.timeout(self.fetch_timeout):
            async with self.session.get(self.metadata_url) as resp:
                resp.raise_for_status()
                metadata = await resp.json(content_type=None)
            async with self.session.get(str(metadata["jwks_uri"])) as resp:
                resp.raise_for_status()
                jwks = await resp.json(content_type=None)
        keys: dict[str, SigningKey] = {}
        for entry in jwks.get("keys") or []:
            kid = entry.get("kid")
            if not kid or entry.get("kty") != "RSA":
                continue
            try:
                key = jwt.PyJWK.from_json(json.dumps(entry), algorithm="RS256").key
            except (jwt.PyJWKError, ValueError, TypeError):
                log.warning("teams.bad_signing_key", extra={"kid": kid})
                continue
            keys[str(kid)] = SigningKey(key, frozenset(entry.get("endorsements") or ()))
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("teams.signing_keys_refreshed", extra={"keys": len(keys)})

    def _start_fetch(self) -> asyncio.Task[bool]:
        """The fetch in flight, started now when none is: callers share it (single flight)."""
        if self._fetch is None:
            task = asyncio.create_task(self._fetch_logged(), name="teams-signing-keys")
            task.add_done_callback(self._fetch_done)
            self._fetch = task
        return self._fetch

    def _fetch_done(self, task: asyncio.Task[bool]) -> None:
        if self._fetch is task:
            self._fetch = None

    async def _fetch_logged(self) -> bool:
        """One refresh in the background; True when it got the keys. Never raises."""
        try:
            await self.refresh()
            return True
        except FETCH_ERRORS as exc:
            log.warning("teams.signing_keys_unavailable", extra={"error": type(exc).__name__})
        except Exception:  # a background task: anything else is logged here or lost
            log.exception("teams.signing_keys_fetch_failed")
        self._failed_at = time.monotonic()
        return False

    def _may_fetch(self, now: float) -> bool:
        return self._fetch is None and now - self._failed_at >= RETRY_AFTER_FAILURE

    async def _key(self, kid: str) -> SigningKey | None:
        """The signing key ``kid``, without waiting on a fetch unless we do not have it.

        A cached key answers at once; when the keys are old a refresh starts in the background.
        An unknown key id starts a refresh (unless one ran lately) and waits for the fetch in
        flight at most ``key_wait`` seconds.
        """
        now = time.monotonic()
        known = self._keys.get(kid)
        if known is not None:
            if now - self._fetched_at >= KEYS_MAX_AGE and self._may_fetch(now):
                self._start_fetch()
            return known
        if now - self._fetched_at >= UNKNOWN_KEY_REFETCH and self._may_fetch(now):
            self._start_fetch()
        fetch = self._fetch
        if fetch is not None:
            await asyncio.wait({fetch}, timeout=self.key_wait)  # never cancels the shared fetch
        return self._keys.get(kid)

    async def refresh_forever(self, every: float = 6 * 3600.0) -> None:
        """Keep the keys fresh in the background so no request waits for a fetch.

        Cancelling this (at shutdown) also cancels a fetch in flight.
        """
        try:
            while True:
                fetch = self._start_fetch()
                await asyncio.wait({fetch})
                good = not fetch.cancelled() and fetch.result()
                await asyncio.sleep(every if good else RETRY_AFTER_FAILURE)
        finally:
            running = self._fetch
            if running is not None:
                running.cancel()
                await asyncio.wait({running})

    async def validate(
        self, authorization: str, service_url: str, channel_id: str
    ) -> dict[str, Any]:
        """The token's claims when the request may come in.

        Raises:
            ChannelAuthError: 401 for a missing, malformed, expired, wrongly signed or wrongly
                addressed token; 403 for a key not endorsed for the channel or a token issued
                for another service URL.
        """
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise ChannelAuthError(401, "missing bearer token")
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None and float(known[0]["exp"]) + LEEWAY > time.time():
            claims, signing = known
        else:
            claims, signing = await self._verify(token)
            self._verified.put(digest, (claims, signing))
        if signing.endorsements and channel_id not in signing.endorsements:
            raise ChannelAuthError(403, "signing key not endorsed for this channel")
        claimed = str(claims.get("serviceurl") or claims.get("serviceUrl") or "")
        if not claimed or _norm(claimed) != _norm(service_url):
            raise ChannelAuthError(403, "token issued for another service URL")
        return claims

    async def _verify(self, token: str) -> tuple[dict[str, Any], SigningKey]:
        """Signature, algorithm, issuer, audience and lifetime. Raises ChannelAuthError (401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ChannelAuthError(401, "malformed token") from None
        if header.get("alg") != "RS256":
            raise ChannelAuthError(401, "signing algorithm not allowed")
        signing = await self._key(str(header.get("kid") or ""))
        if signing is None:
            raise ChannelAuthError(401, "unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing.key,
                algorithms=["RS256"],
                audience=self.app_id,
                issuer=list(self.issuers),
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise ChannelAuthError(401, "token expired") from None
        except jwt.InvalidAudienceError:
            raise ChannelAuthError(401, "token for another app") from None
        except jwt.InvalidIssuerError:
            raise ChannelAuthError(401, "token from an unknown issuer") from None
        except jwt.PyJWTError:
            raise ChannelAuthError(401, "invalid token") from None
        return claims, signing


def _norm(url: str) -> str:
    return url.rstrip("/").lower()


class AppTokenSource:
    """The bot's own outbound token (OAuth client credentials), cached until near expiry."""

    def __init__(
        self,
        login_url: str,
        app_id: str,
        password: str,
        session: aiohttp.ClientSession,
        scope: str = BOT_SCOPE,
    ) -> None:
        self.login_url = login_url
        self.app_id = app_id
        self._password = password
        self.session = session
        self.scope = scope
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def current(self) -> str:
        """The cached token ('' when none yet); for the sync credentials hook of msrest."""
        return self._token

    async def token(self) -> str:
        """A token valid for at least five more minutes.

        Raises:
            PermissionError: the login service refused the app's credentials.
        """
        if self._token and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self._password,
                "scope": self.scope,
            }
            timeout = aiohttp.ClientTimeout(total=15)
            async with self.session.post(self.login_url, data=form, timeout=timeout) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or "access_token" not in body:
                    error = str(body.get("error", resp.status)) if isinstance(body, dict) else ""
                    raise PermissionError(f"bot login refused: {error}")
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 3600))
            self._expires = time.monotonic() + max(lifetime - 300.0, lifetime / 2)
            return self._token
