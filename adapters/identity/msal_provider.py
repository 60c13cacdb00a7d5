"""MsalIdentityProvider: core's IdentityProvider port on top of MSAL's public client.

One MSAL app is built per call around the tenant's own authority and its decrypted cache (the
authority metadata is shared through ``http_cache``, so no extra discovery requests). The cache is
loaded, used and saved under a per-tenant lock, and saved only when it changed. MSAL runs on a
bounded pool of threads; its HTTP requests run on the event loop (``adapters.identity.http``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import msal

from adapters.identity.errors import is_waiting, to_error, unavailable
from adapters.identity.graph import read_directory
from adapters.identity.http import METADATA, HttpStatusError, LoopHttpClient
from core.errors import IdentityProviderError
from core.locks import KeyedLocks
from core.model import DeviceCode, Tenant
from core.ports import (
    AccessToken,
    BrowserSignInStart,
    Clock,
    DirectoryCheck,
    PollPending,
    SignedIn,
    StagedTokens,
    TokenCacheStore,
)

T = TypeVar("T")
GRAPH_SCOPES = ["https://graph.microsoft.com/.default"]


def _skip_absent_msal_extensions() -> None:
    """MSAL looks for the optional ``msal_extensions`` package in every app constructor. When it
    is not installed, each look searches sys.path under the interpreter's import lock (a tenth of
    the pool threads' time in a health sweep, bench/health.py). Note its absence once: Python then
    answers such an import with ImportError at once, which MSAL treats as "not installed"."""
    if "msal_extensions" not in sys.modules and importlib.util.find_spec("msal_extensions") is None:
        sys.modules["msal_extensions"] = None  # type: ignore[assignment]


def _query_mode(url: str) -> str:
    """``url`` with ``response_mode=query`` (the code comes back in the callback's query)."""
    parts = urlsplit(url)
    query = [(k, "query" if k == "response_mode" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class MsalIdentityProvider:
    def __init__(
        self,
        *,
        authority_host: str,
        client_id: str,
        token_sets: Mapping[str, Sequence[str]],
        graph_url: str,
        cache_store: TokenCacheStore,
        clock: Clock,
        ca_bundle: str | None = None,
        pool_size: int = 8,
        check_pool_size: int = 16,
        timeout: float = 10.0,
        callback_url: str = "",
    ) -> None:
        if not token_sets:
            raise ValueError("at least one token set is required")
        self._host = authority_host.rstrip("/")
        self._client_id = client_id
        self._sets = {name: list(scopes) for name, scopes in token_sets.items()}
        self._graph = graph_url.rstrip("/")
        self._callback = callback_url
        self._store = cache_store
        self._clock = clock
        self._tls = ssl.create_default_context(cafile=ca_bundle)
        self._timeout = timeout
        self._http: LoopHttpClient | None = None
        self._http_cache: dict[Any, Any] = {}
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="msal")
        # Health checks get their own threads (made when first needed): a sweep of thousands of
        # tenants must not make a customer's sign-in wait behind it, and each check holds a
        # thread for a round trip to Microsoft, so a sweep wants more threads than flows do.
        self._check_pool = ThreadPoolExecutor(check_pool_size, thread_name_prefix="msal-check")
        self._locks = KeyedLocks()  # one tenant's cache at a time; empties as they finish
        _skip_absent_msal_extensions()

    def token_set_names(self) -> Sequence[str]:
        return list(self._sets)

    def scopes(self, tenant: Tenant, name: str) -> list[str]:
        """The set's scopes; ``{tenant}`` is the label of the tenant's initial domain (its
        SharePoint host: contosoltd of contosoltd.onmicrosoft.com), not of its primary one."""
        return [s.replace("{tenant}", tenant.sharepoint_label) for s in self._sets[name]]

    async def close(self) -> None:
        for pool in (self._pool, self._check_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self._http is not None:
            await self._http.session.close()
            self._http = None

    def _client(self) -> LoopHttpClient:
        """The HTTP client for MSAL, made on first use (it belongs to the running loop)."""
        if self._http is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
            self._http = LoopHttpClient(asyncio.get_running_loop(), session)
        return self._http

    async def _run(
        self,
        fn: Callable[[], T],
        tenant: Tenant | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> T:
        """``fn`` on a pool (the flows' unless told). With ``tenant``, ``fn`` builds the tenant's
        MSAL app: its authority metadata is fetched first, on the loop, if it is not at hand."""
        client = self._client()
        if tenant is not None:
            await client.prefetch_metadata(f"{self._authority(tenant)}/v2.0{METADATA}")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn)
        except (aiohttp.ClientError, TimeoutError, HttpStatusError) as exc:
            raise unavailable(type(exc).__name__) from None
        except ValueError as exc:
            # MSAL raises ValueError when the authority's metadata cannot be fetched.
            if "authority" in str(exc).lower():
                raise IdentityProviderError("invalid_authority", "invalid_authority") from None
            raise

    def _authority(self, tenant: Tenant) -> str:
        return f"{self._host}/{tenant.tenant_id}"

    def _app(self, tenant: Tenant, cache: msal.SerializableTokenCache | None = None) -> Any:
        return msal.PublicClientApplication(
            self._client_id,
            authority=self._authority(tenant),
            http_client=self._http,
            instance_discovery=False,
            token_cache=cache,
            http_cache=self._http_cache,
        )

    async def _with_cache(
        self,
        tenant: Tenant,
        work: Callable[[msal.SerializableTokenCache], T],
        pool: ThreadPoolExecutor | None = None,
    ) -> T:
        async with self._locks.hold(tenant.tenant_id):
            cache = msal.SerializableTokenCache()
            stored = await self._store.load(tenant.tenant_id)
            if stored:
                cache.deserialize(stored)
            result = await self._run(lambda: work(cache), tenant, pool)
            if cache.has_state_changed:
                await self._store.save(tenant.tenant_id, cache.serialize())
            return result

    async def start_device_flow(self, tenant: Tenant) -> DeviceCode:
        first = self.scopes(tenant, next(iter(self._sets)))
        flow = await self._run(lambda: self._app(tenant).initiate_device_flow(scopes=first), tenant)
        if "user_code" not in flow:
            raise to_error(flow)
        return DeviceCode(
            user_code=flow["user_code"],
            verification_uri=flow["verification_uri"],
            expires_at=self._clock.now() + timedelta(seconds=int(flow.get("expires_in", 900))),
            interval=int(flow.get("interval", 5)),
            flow_state=json.dumps(flow).encode(),
        )

    async def _with_staged(
        self,
        tenant: Tenant,
        staged: StagedTokens,
        work: Callable[[msal.SerializableTokenCache], T],
    ) -> T:
        """``work`` on a sign-in's staged cache; ``staged.blob`` follows what MSAL changed."""
        cache = msal.SerializableTokenCache()
        if staged.blob:
            cache.deserialize(staged.blob.decode())
        result = await self._run(lambda: work(cache), tenant)
        if cache.has_state_changed:
            staged.blob = cache.serialize().encode()
        return result

    async def poll(self, tenant: Tenant, code: DeviceCode) -> PollPending | SignedIn:
        flow = json.loads(code.flow_state)
        flow["expires_at"] = code.expires_at.timestamp()
        # A cache of its own, not the tenant's: whoever signs in, the tenant's working tokens are
        # untouched until core has checked the account and promotes the staged ones.
        staged = StagedTokens()

        def once(cache: msal.SerializableTokenCache) -> dict[str, Any]:
            app = self._app(tenant, cache)
            result: dict[str, Any] = app.acquire_token_by_device_flow(
                flow, exit_condition=lambda _flow: True
            )
            return result

        result = await self._with_staged(tenant, staged, once)
        if is_waiting(result):
            updated = replace(
                code,
                interval=int(flow.get("interval", code.interval)),
                flow_state=json.dumps(flow).encode(),
            )
            return PollPending(updated)
        if "access_token" not in result:
            raise to_error(result)
        return _signed_in(result, staged)

    async def _silent(
        self,
        tenant: Tenant,
        scopes: list[str],
        force_refresh: bool = False,
        pool: ThreadPoolExecutor | None = None,
        staged: StagedTokens | None = None,
    ) -> dict[str, Any]:
        """A token for ``scopes`` from the staged sign-in, or without one the tenant's cache."""

        def work(cache: msal.SerializableTokenCache) -> dict[str, Any]:
            app = self._app(tenant, cache)
            accounts = app.get_accounts()
            if not accounts:
                return {"error": "no_account", "error_description": "no signed-in account"}
            got = app.acquire_token_silent_with_error(
                scopes, account=accounts[0], force_refresh=force_refresh
            )
            return got or {"error": "no_token", "error_description": "no refresh token"}

        if staged is not None:
            result = await self._with_staged(tenant, staged, work)
        else:
            result = await self._with_cache(tenant, work, pool)
        if "access_token" not in result:
            raise to_error(result)
        return result

    async def acquire_silently(self, tenant: Tenant, token_set: str, staged: StagedTokens) -> None:
        await self._silent(tenant, self.scopes(tenant, token_set), staged=staged)

    async def promote(self, tenant: Tenant, staged: StagedTokens) -> None:
        """The staged sign-in becomes the tenant's whole cache (only the new admin's grant)."""
        async with self._locks.hold(tenant.tenant_id):
            await self._store.save(tenant.tenant_id, staged.blob.decode())

    async def refresh(self, tenant: Tenant) -> None:
        """The health check: redeem the refresh token, on the health checks' own threads."""
        first = next(iter(self._sets))
        await self._silent(tenant, self.scopes(tenant, first), True, self._check_pool)

    async def check_directory(
        self, tenant: Tenant, staged: StagedTokens | None = None, *, full: bool = True
    ) -> DirectoryCheck:
        token = (await self._silent(tenant, GRAPH_SCOPES, staged=staged))["access_token"]
        return await read_directory(self._client(), self._graph, token, self._client_id, full=full)

    def admin_consent_url(self, tenant: Tenant) -> str:
        """Microsoft's admin-consent endpoint for our app in the tenant ("Admin consent on the
        Microsoft identity platform"); it returns to our callback route."""
        query = urlencode(
            {
                "client_id": self._client_id,
                "scope": " ".join(GRAPH_SCOPES),
                "redirect_uri": self._callback,
                "state": tenant.tenant_id,
            }
        )
        return f"{self._host}/{tenant.tenant_id}/v2.0/adminconsent?{query}"

    # -- the token API (issue 15) ---------------------------------------------------------------

    def _stored_token(
        self, app: Any, scopes: list[str], account: dict[str, Any], min_left: timedelta
    ) -> dict[str, Any] | None:
        """The cached access token for ``scopes`` living longer than ``min_left``, looked up
        the way MSAL's own silent call does (same query and target match), with no request."""
        query = {"client_id": self._client_id, "home_account_id": account.get("home_account_id")}
        now = self._clock.now().timestamp()
        for entry in app.token_cache.search(
            msal.TokenCache.CredentialType.ACCESS_TOKEN, target=scopes, query=query
        ):
            if int(entry["expires_on"]) - now > min_left.total_seconds():
                return {
                    "access_token": entry["secret"],
                    "expires_on": int(entry["expires_on"]),
                    "scope": entry.get("target", ""),
                }
        return None

    async def _access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta, refresh: bool
    ) -> AccessToken | None:
        scopes = self.scopes(tenant, token_set)
        refreshed = False

        def work(cache: msal.SerializableTokenCache) -> dict[str, Any] | None:
            nonlocal refreshed
            app = self._app(tenant, cache)
            accounts = app.get_accounts()
            if not accounts:
                return {"error": "no_account", "error_description": "no signed-in account"}
            found = self._stored_token(app, scopes, accounts[0], min_left)
            if not refresh:
                # MSAL's search drops expired tokens from the cache it holds; a read must not
                # save that copy over what another replica is refreshing right now.
                cache.has_state_changed = False
            if found is not None or not refresh:
                return found and {**found, "username": accounts[0].get("username", "")}
            got = app.acquire_token_silent_with_error(
                scopes, account=accounts[0], force_refresh=True
            )
            if not got or "access_token" not in got:
                return got or {"error": "no_token", "error_description": "no refresh token"}
            refreshed = True
            expires = int(self._clock.now().timestamp()) + int(got.get("expires_in", 0))
            return {
                "access_token": got["access_token"],
                "expires_on": expires,
                "scope": str(got.get("scope") or " ".join(scopes)),
                "username": accounts[0].get("username", ""),
            }

        result = await self._with_cache(tenant, work)
        if result is None:
            return None
        if "access_token" not in result:
            raise to_error(result)
        return AccessToken(
            token=result["access_token"],
            expires_at=datetime.fromtimestamp(result["expires_on"], UTC),
            scopes=tuple(str(result["scope"]).split()),
            tenant_id=tenant.tenant_id,
            account=str(result["username"]),
            refreshed=refreshed,
        )

    async def cached_access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken | None:
        """The tenant's stored token for the set if it lives longer than ``min_left``; no
        request to Microsoft (a tenant with no account raises ``no_tokens``)."""
        return await self._access_token(tenant, token_set, min_left, refresh=False)

    async def access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken:
        """The stored token if still good (re-read under the tenant's lock: another replica may
        have just refreshed it), else one redeemed with the refresh token; the rotated refresh
        token is saved with the cache, once."""
        token = await self._access_token(tenant, token_set, min_left, refresh=True)
        assert token is not None, "a refresh answers a token or raises"
        return token

    # -- the browser sign-in: authorization code with PKCE ("Microsoft identity platform and
    # OAuth 2.0 authorization code flow"). MSAL makes the PKCE verifier and challenge (S256)
    # and the nonce, and checks state and nonce on the way back; we keep its flow dict, sealed
    # by storage, between the two halves. A public client: no secret is sent, the redirect URI is
    # registered under "Mobile and desktop applications" (README).

    async def begin_browser_sign_in(
        self, tenant: Tenant, *, login_hint: str, redirect_uri: str, state: str
    ) -> BrowserSignInStart:
        first = self.scopes(tenant, next(iter(self._sets)))

        def begin() -> dict[str, Any]:
            # The query response mode: our redirect URI is a GET route (DESIGN.md 9) and the
            # cookie binding the return to the browser is SameSite=Lax, which a cross-site
            # form_post would not carry. MSAL warns on every non-form_post request (RFC 9700
            # 4.3.1: codes in URLs leak through logs and Referer); ours is single use, bound to
            # the PKCE verifier, never logged, and the callback answers with no-referrer. Asked
            # as form_post and the mode set in the URL, MSAL stays quiet without a global filter.
            flow: dict[str, Any] = self._app(tenant).initiate_auth_code_flow(
                scopes=first,
                redirect_uri=redirect_uri,
                state=state,
                login_hint=login_hint,
                response_mode="form_post",
            )
            flow["auth_uri"] = _query_mode(str(flow["auth_uri"]))
            return flow

        flow = await self._run(begin, tenant)
        return BrowserSignInStart(str(flow["auth_uri"]), json.dumps(flow).encode())

    async def finish_browser_sign_in(
        self, tenant: Tenant, flow_state: bytes, response: Mapping[str, str]
    ) -> SignedIn:
        flow = json.loads(flow_state)
        staged = StagedTokens()  # as in poll: never the tenant's cache

        def redeem(cache: msal.SerializableTokenCache) -> dict[str, Any]:
            app = self._app(tenant, cache)
            try:
                result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, dict(response))
            except ValueError:  # MSAL: the state does not match, or neither code nor error
                return {"error": "state_mismatch", "error_description": "state_mismatch"}
            except RuntimeError:  # MSAL: the id_token's nonce is not ours
                return {"error": "nonce_mismatch", "error_description": "nonce_mismatch"}
            return result

        result = await self._with_staged(tenant, staged, redeem)
        if "access_token" not in result:
            raise to_error(result)
        return _signed_in(result, staged)


def _signed_in(result: dict[str, Any], staged: StagedTokens) -> SignedIn:
    """The account a successful sign-in (device code or browser) names, its tokens staged."""
    claims = result.get("id_token_claims") or {}
    return SignedIn(
        account=str(claims.get("preferred_username", "")),
        tenant_id=str(claims.get("tid", "")),
        object_id=str(claims.get("oid", "")),
        roles=frozenset(claims.get("wids") or ()),
        staged=staged,
    )
