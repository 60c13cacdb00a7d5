"""MsalIdentityProvider: core's IdentityProvider port on top of MSAL's public client.

One MSAL app is built per call around the tenant's own authority and its decrypted cache (the
authority metadata is shared through ``http_cache``, so no extra discovery requests). The cache is
loaded, used and saved under a per-tenant lock, and saved only when it changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import msal
import requests
import requests.adapters

from adapters.identity.errors import is_waiting, to_error, unavailable
from core.errors import IdentityProviderError
from core.model import DeviceCode, Tenant
from core.ports import Clock, DirectoryCheck, PollPending, SignedIn, TokenCacheStore

T = TypeVar("T")
GRAPH_SCOPES = ["https://graph.microsoft.com/.default"]


class _TimeoutSession(requests.Session):
    """A session that ignores proxy/CA environment variables and always has a timeout."""

    def __init__(self, verify: str | bool, timeout: float, connections: int = 10) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = verify
        self._timeout = timeout
        # One kept-alive connection per pool thread: otherwise extra TLS handshakes per call.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
        self.mount("https://", adapter)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


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
        timeout: float = 10.0,
    ) -> None:
        if not token_sets:
            raise ValueError("at least one token set is required")
        self._host = authority_host.rstrip("/")
        self._client_id = client_id
        self._sets = {name: list(scopes) for name, scopes in token_sets.items()}
        self._graph = graph_url.rstrip("/")
        self._store = cache_store
        self._clock = clock
        self._session = _TimeoutSession(ca_bundle or True, timeout, pool_size)
        self._http_cache: dict[Any, Any] = {}
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="msal")
        self._locks: dict[str, asyncio.Lock] = {}

    def token_set_names(self) -> Sequence[str]:
        return list(self._sets)

    def scopes(self, tenant: Tenant, name: str) -> list[str]:
        label = tenant.primary_domain.split(".")[0]
        return [s.replace("{tenant}", label) for s in self._sets[name]]

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except requests.RequestException as exc:
            raise unavailable(type(exc).__name__) from None
        except ValueError as exc:
            # MSAL raises ValueError when the authority's metadata cannot be fetched.
            if "authority" in str(exc).lower():
                raise IdentityProviderError("invalid_authority", "invalid_authority") from None
            raise

    def _app(self, tenant: Tenant, cache: msal.SerializableTokenCache | None = None) -> Any:
        return msal.PublicClientApplication(
            self._client_id,
            authority=f"{self._host}/{tenant.tenant_id}",
            http_client=self._session,
            instance_discovery=False,
            token_cache=cache,
            http_cache=self._http_cache,
        )

    def _lock(self, tenant: Tenant) -> asyncio.Lock:
        return self._locks.setdefault(tenant.tenant_id, asyncio.Lock())

    async def _with_cache(
        self, tenant: Tenant, work: Callable[[msal.SerializableTokenCache], T]
    ) -> T:
        async with self._lock(tenant):
            cache = msal.SerializableTokenCache()
            stored = await self._store.load(tenant.tenant_id)
            if stored:
                cache.deserialize(stored)
            result = await self._run(lambda: work(cache))
            if cache.has_state_changed:
                await self._store.save(tenant.tenant_id, cache.serialize())
            return result

    async def start_device_flow(self, tenant: Tenant) -> DeviceCode:
        first = self.scopes(tenant, next(iter(self._sets)))
        flow = await self._run(lambda: self._app(tenant).initiate_device_flow(scopes=first))
        if "user_code" not in flow:
            raise to_error(flow)
        return DeviceCode(
            user_code=flow["user_code"],
            verification_uri=flow["verification_uri"],
            expires_at=self._clock.now() + timedelta(seconds=int(flow.get("expires_in", 900))),
            interval=int(flow.get("interval", 5)),
            flow_state=json.dumps(flow).encode(),
        )

    async def poll(self, tenant: Tenant, code: DeviceCode) -> PollPending | SignedIn:
        flow = json.loads(code.flow_state)
        flow["expires_at"] = code.expires_at.timestamp()

        def once(cache: msal.SerializableTokenCache) -> dict[str, Any]:
            app = self._app(tenant, cache)
            result: dict[str, Any] = app.acquire_token_by_device_flow(
                flow, exit_condition=lambda _flow: True
            )
            if "access_token" in result:
                keep = result.get("id_token_claims", {}).get("oid")
                for account in app.get_accounts():
                    if account.get("local_account_id") != keep:
                        app.remove_account(account)  # only the latest admin's grant is kept
            return result

        result = await self._with_cache(tenant, once)
        if is_waiting(result):
            updated = replace(
                code,
                interval=int(flow.get("interval", code.interval)),
                flow_state=json.dumps(flow).encode(),
            )
            return PollPending(updated)
        if "access_token" not in result:
            raise to_error(result)
        claims = result.get("id_token_claims") or {}
        return SignedIn(
            account=str(claims.get("preferred_username", "")),
            tenant_id=str(claims.get("tid", "")),
            object_id=str(claims.get("oid", "")),
            roles=frozenset(claims.get("wids") or ()),
        )

    async def _silent(
        self, tenant: Tenant, scopes: list[str], force_refresh: bool = False
    ) -> dict[str, Any]:
        def work(cache: msal.SerializableTokenCache) -> dict[str, Any]:
            app = self._app(tenant, cache)
            accounts = app.get_accounts()
            if not accounts:
                return {"error": "no_account", "error_description": "no signed-in account"}
            got = app.acquire_token_silent_with_error(
                scopes, account=accounts[0], force_refresh=force_refresh
            )
            return got or {"error": "no_token", "error_description": "no refresh token"}

        result = await self._with_cache(tenant, work)
        if "access_token" not in result:
            raise to_error(result)
        return result

    async def acquire_silently(self, tenant: Tenant, token_set: str) -> None:
        await self._silent(tenant, self.scopes(tenant, token_set))

    async def refresh(self, tenant: Tenant) -> None:
        first = next(iter(self._sets))
        await self._silent(tenant, self.scopes(tenant, first), force_refresh=True)

    async def check_directory(self, tenant: Tenant) -> DirectoryCheck:
        token = (await self._silent(tenant, GRAPH_SCOPES))["access_token"]
        url = f"{self._graph}/v1.0/organization"
        response = await self._run(
            lambda: self._session.get(url, headers={"Authorization": f"Bearer {token}"})
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise unavailable(f"graph answered {response.status_code}")
        if response.status_code != 200:
            raise IdentityProviderError(
                "graph_failed", "graph_failed", f"graph answered {response.status_code}"
            )
        try:
            org = response.json()["value"][0]
            return DirectoryCheck(str(org["id"]), str(org.get("displayName", "")))
        except (ValueError, KeyError, IndexError, TypeError):
            raise IdentityProviderError("graph_failed", "graph_failed", "unexpected body") from None
