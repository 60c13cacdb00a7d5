"""botbuilder glue: our authentication behind botbuilder's CloudAdapter, and cheaper connectors.

botbuilder's ``CloudAdapterBase`` runs the turns and talks to the Bot Connector; this module
replaces the parts of it that block the event loop or cost too much:

- ``RenewbotAuthentication`` validates inbound tokens with ``ChannelTokenValidator`` (async key
  fetches, 401/403 instead of 500), or lets everything in when anonymous (development) mode is on.
- ``ConnectorPool`` keeps one ``ConnectorClient`` per service URL instead of a new one per turn,
  with credentials that read a token ``AppTokenSource`` refreshed asynchronously beforehand (stock
  ``MicrosoftAppCredentials`` calls MSAL, blocking, from inside the send).
- ``speed_up_msrest`` makes msrest's retry policy cheap to build (see its docstring).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from botbuilder.core import CloudAdapterBase
from botbuilder.schema import Activity, CallerIdConstants
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AppCredentials,
    AuthenticateRequestResult,
    AuthenticationConstants,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
)
from msrest.universal_http.requests import ClientRetryPolicy

from adapters.teams.auth import AppTokenSource, ChannelAuthError, ChannelTokenValidator

POOL_SIZE = 64


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


class SourceCredentials(AppCredentials):  # type: ignore[misc]
    """msrest credentials whose token comes from an AppTokenSource (no MSAL, no blocking)."""

    def __init__(self, app_id: str, source: AppTokenSource | None) -> None:
        super().__init__(
            app_id=app_id, oauth_scope=AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        )
        self.source = source

    def get_access_token(self, force_refresh: bool = False) -> str:
        return self.source.current if self.source is not None else ""


class ConnectorPool(ConnectorFactory):  # type: ignore[misc]
    """One ConnectorClient per service URL (least recently used dropped beyond POOL_SIZE).

    HTTP status retries are ours (TeamsThreads retries 429/412/502/504 with jitter), so msrest's
    urllib3 layer keeps only its retries of connection errors.
    """

    def __init__(self, app_id: str, source: AppTokenSource | None) -> None:
        self.app_id = app_id
        self.source = source
        self._clients: OrderedDict[str, ConnectorClient] = OrderedDict()

    async def create(self, service_url: str, audience: str | None = None) -> ConnectorClient:
        if self.source is not None:
            await self.source.token()  # refreshed here, asynchronously, never inside the send
        client = self._clients.get(service_url)
        if client is None:
            client = ConnectorClient(
                SourceCredentials(self.app_id, self.source), base_url=service_url
            )
            client.config.retry_policy.policy.status_forcelist = frozenset()
            self._clients[service_url] = client
            while len(self._clients) > POOL_SIZE:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(service_url)
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
