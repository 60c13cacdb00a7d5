"""botbuilder glue: our authentication behind botbuilder's CloudAdapter, and cheaper connectors.

botbuilder's ``CloudAdapterBase`` runs the turns and talks to the Bot Connector; this module
replaces the parts of it that block the event loop or cost too much:

- ``RenewbotAuthentication`` validates inbound tokens with ``ChannelTokenValidator`` (async key
  fetches, 401/403 instead of 500), or lets everything in when anonymous (development) mode is on.
- ``ConnectorPool`` keeps one ``ConnectorClient`` per service URL instead of a new one per turn.
  Its msrest pipeline sends with aiohttp on the event loop (stock msrest runs ``requests`` on the
  default executor, one thread hop per send) and adds the bot's token from ``AppTokenSource``,
  fetched asynchronously (stock ``MicrosoftAppCredentials`` calls MSAL, blocking, inside the send).
- ``speed_up_msrest`` makes msrest's retry policy cheap to build (see its docstring).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from botbuilder.core import CloudAdapterBase
from botbuilder.schema import Activity, CallerIdConstants
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AuthenticateRequestResult,
    AuthenticationConstants,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
)
from msrest.exceptions import ClientRequestError
from msrest.pipeline import Request, Response
from msrest.pipeline.async_abc import AsyncHTTPPolicy, AsyncHTTPSender, AsyncPipeline
from msrest.pipeline.universal import RawDeserializer
from msrest.universal_http import HTTPClientResponse
from msrest.universal_http.requests import ClientRetryPolicy

from adapters.teams.auth import AppTokenSource, ChannelAuthError, ChannelTokenValidator
from core.lru import BoundedCache

POOL_SIZE = 64
_NO_CREDENTIALS = object()


def speed_up_msrest() -> None:
    """Give msrest's retry policy its safe codes as a frozenset.

    ``ClientRetryPolicy.__init__`` builds ``[i for i in range(999) if i not in safe_codes]`` where
    ``safe_codes`` is a 501-item list: half a million comparisons, twice per ConnectorClient, which
    stock botbuilder creates on every turn (about 7 of its 11 ms of CPU). The same codes as a
    frozenset give the same retry list at a fraction of the cost. Idempotent.
    """
    codes = ClientRetryPolicy.safe_codes
    if not isinstance(codes, frozenset):
        ClientRetryPolicy.safe_codes = frozenset(codes)  # type: ignore[assignment]


class _Loaded(HTTPClientResponse):
    """A response read to the end, for msrest's deserializer."""

    def __init__(self, request: Any, status: int, headers: Any, reason: str, body: bytes) -> None:
        super().__init__(request, None)
        self.internal_response = self  # what msrest's HttpOperationError exposes as .response
        self.status_code, self.headers, self.reason, self._body = status, headers, reason, body

    def body(self) -> bytes:
        return self._body


class AioHttpSender(AsyncHTTPSender[Any, Any]):
    """msrest's last pipeline step on a shared aiohttp session, with a timeout per request."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 15.0) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> AioHttpSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def build_context(self) -> None:
        return None

    async def send(self, request: Request[Any], **config: Any) -> Response[Any, Any]:
        http = request.http_request
        try:
            async with self.session.request(
                http.method, http.url, headers=http.headers, data=http.data, timeout=self.timeout
            ) as resp:
                body = await resp.read()
                loaded = _Loaded(http, resp.status, resp.headers.copy(), resp.reason or "", body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientRequestError(f"connector unreachable: {type(exc).__name__}") from None
        return Response(request, loaded)


class BearerPolicy(AsyncHTTPPolicy[Any, Any]):
    """Adds the bot's token (none in anonymous development mode)."""

    def __init__(self, source: AppTokenSource | None) -> None:
        super().__init__()
        self.source = source

    async def send(self, request: Request[Any], **kwargs: Any) -> Response[Any, Any]:
        if self.source is not None:
            try:
                token = await self.source.token()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise ClientRequestError(f"bot login unreachable: {type(exc).__name__}") from None
            request.http_request.headers["Authorization"] = f"Bearer {token}"
        assert self.next is not None
        return await self.next.send(request, **kwargs)


class ConnectorPool(ConnectorFactory):  # type: ignore[misc]
    """One ConnectorClient per service URL (least recently used dropped beyond POOL_SIZE).

    HTTP status retries are TeamsThreads' (429/412/502/504 with jitter and Retry-After).
    """

    def __init__(
        self, app_id: str, source: AppTokenSource | None, session: aiohttp.ClientSession
    ) -> None:
        self.app_id = app_id
        self.source = source
        self.session = session
        self._clients: BoundedCache[str, ConnectorClient] = BoundedCache(POOL_SIZE)

    def _pipeline(self, config: Any) -> AsyncPipeline[Any, Any]:
        policies = [
            config.user_agent_policy,
            BearerPolicy(self.source),
            RawDeserializer(),
            config.http_logger_policy,
        ]
        return AsyncPipeline(policies, AioHttpSender(self.session))

    async def create(self, service_url: str, audience: str | None = None) -> ConnectorClient:
        client = self._clients.get(service_url)
        if client is None:
            # msrest insists on a credentials object; BearerPolicy does the real signing.
            client = ConnectorClient(
                _NO_CREDENTIALS, base_url=service_url, pipeline_type=self._pipeline
            )
            # Our activities are built by cards.py, not typed in: msrest's recursive validation
            # of every outgoing model (walking each card) is cost without a benefit here.
            client._serialize.client_side_validation = False
            self._clients.put(service_url, client)
        return client


class RenewbotAuthentication(BotFrameworkAuthentication):  # type: ignore[misc]
    """Inbound validation by ChannelTokenValidator (None: anonymous development mode)."""

    def __init__(self, validator: ChannelTokenValidator | None, pool: ConnectorPool) -> None:
        self.validator = validator
        self.pool = pool

    async def authenticate_request(
        self, activity: Activity, auth_header: str | None
    ) -> AuthenticateRequestResult:
        if self.validator is None:
            claims: dict[str, Any] = {}
        else:
            claims = await self.validator.validate(
                auth_header or "", activity.service_url or "", activity.channel_id or ""
            )
        result = AuthenticateRequestResult()
        result.claims_identity = ClaimsIdentity(claims, True)
        result.audience = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        result.caller_id = CallerIdConstants.public_azure_channel
        result.connector_factory = self.pool
        return result

    async def authenticate_streaming_request(
        self, auth_header: str, channel_id_header: str
    ) -> AuthenticateRequestResult:
        raise ChannelAuthError(403, "streaming is not supported")

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        return self.pool

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> None:
        return None  # the bot uses no user sign-in (OAuth cards)

    def get_originating_audience(self) -> str:
        return str(AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE)

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        raise ChannelAuthError(403, "skill requests are not supported")


class TeamsAdapter(CloudAdapterBase):  # type: ignore[misc]
    """botbuilder's cloud adapter over RenewbotAuthentication."""
