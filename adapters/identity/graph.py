"""What Microsoft Graph says about a tenant and the account that signed in, read with its token.

Every fact comes from a source Entra really provides with a default app registration, each read
as its Graph v1.0 reference page documents it:

- "Get organization": the organization's id and name, and ``verifiedDomains`` (``isInitial``
  names the *.onmicrosoft.com domain the SharePoint host comes from). Needs User.Read; without
  it nothing is verified (the check fails).
- "Get user" with ``$select=id,userPrincipalName,userType``: Member or Guest (a B2B guest signs
  in with the customer's ``tid``; only this tells it apart). userType comes only on ``$select``.
- "List a user's memberships (direct and transitive)" cast to directoryRole: the Global
  Administrator role by its template id. With User.Read alone Graph returns the roles with
  ``roleTemplateId`` null ("limited information"): then the role is not verified, and we say why.
- "Get servicePrincipal" by appId and "List oauth2PermissionGrants" filtered by its id: consent
  for the whole organization is a grant with consentType AllPrincipals; a Principal grant alone
  is consent for one user. 404 for the service principal: the Enterprise Application is gone.
  These need Application.Read.All / Directory.Read.All; without them consent is not verified.

A 403 makes that one fact "not verified" (with the permission to add); 5xx/429 and connection
errors are a passing outage; anything unreadable is ``graph_failed``. Tokens never leave here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from adapters.identity.errors import unavailable
from adapters.identity.http import LoopHttpClient
from core.errors import IdentityProviderError
from core.ports import DirectoryCheck

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
ROLES_UNREAD = (
    "Global Administrator role not verified: Graph lists the signer's roles without their "
    "template ids unless the app registration has RoleManagement.Read.Directory or "
    "Directory.Read.All (delegated)"
)
CONSENT_UNREAD = (
    "consent for the organization not verified: reading the app's permission grants needs "
    "Directory.Read.All (delegated) in the app registration"
)


class _Denied(Exception):
    """Graph answered 403 or 401: the token lacks the permission for this one fact."""


async def _get(http: LoopHttpClient, url: str, token: str) -> Any:
    try:
        response = await http.request("GET", url, headers={"Authorization": f"Bearer {token}"})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise unavailable(type(exc).__name__) from None
    status = response.status_code
    if status >= 500 or status == 429:
        raise unavailable(f"graph answered {status}")
    if status in (401, 403):
        raise _Denied
    if status == 404:
        return None
    if status != 200:
        raise IdentityProviderError("graph_failed", "graph_failed", f"graph answered {status}")
    try:
        return json.loads(response.text)
    except ValueError:
        raise IdentityProviderError("graph_failed", "graph_failed", "unexpected body") from None


async def read_directory(
    http: LoopHttpClient, graph: str, token: str, client_id: str, *, full: bool = True
) -> DirectoryCheck:
    """The organization and the signer; with ``full``, also their role and the app's consent.

    Raises:
        IdentityProviderError: ``unavailable`` (retry later) or ``graph_failed``.
    """
    base = f"{graph}/v1.0"
    if full:
        (org_id, name, initial), (user_type, upn), is_ga, consent = await asyncio.gather(
            _organization(http, base, token),
            _user(http, base, token),
            _is_global_admin(http, base, token),
            _consent(http, base, token, client_id),
        )
    else:
        (org_id, name, initial), (user_type, upn) = await asyncio.gather(
            _organization(http, base, token), _user(http, base, token)
        )
        is_ga = consent = None
    unverified: list[str] = []
    if full:
        if is_ga is None:
            unverified.append(ROLES_UNREAD)
        if consent is None:
            unverified.append(CONSENT_UNREAD)
    return DirectoryCheck(org_id, name, initial, user_type, upn, is_ga, consent, tuple(unverified))


async def _organization(http: LoopHttpClient, base: str, token: str) -> tuple[str, str, str]:
    try:
        body = await _get(http, f"{base}/organization", token)
        org = body["value"][0]
        initial = next(
            (str(d["name"]) for d in org.get("verifiedDomains") or [] if d.get("isInitial")), ""
        )
        return str(org["id"]), str(org.get("displayName") or ""), initial
    except _Denied:
        raise IdentityProviderError("graph_failed", "graph_failed", "organization denied") from None
    except (KeyError, IndexError, TypeError):
        raise IdentityProviderError("graph_failed", "graph_failed", "unexpected body") from None


async def _user(http: LoopHttpClient, base: str, token: str) -> tuple[str, str]:
    try:
        me = await _get(http, f"{base}/me?$select=id,userPrincipalName,userType", token)
    except _Denied:
        return "", ""
    if not isinstance(me, dict):
        return "", ""
    upn = str(me.get("userPrincipalName") or "")
    user_type = str(me.get("userType") or "")
    if not user_type and "#EXT#" in upn.upper():
        user_type = "Guest"  # a guest's UPN carries #EXT# ("Properties of a B2B guest user")
    return user_type, upn


async def _is_global_admin(http: LoopHttpClient, base: str, token: str) -> bool | None:
    url = f"{base}/me/transitiveMemberOf/microsoft.graph.directoryRole"
    try:
        body = await _get(http, url, token)
    except _Denied:
        return None
    roles = (body or {}).get("value") or []
    templates = [r.get("roleTemplateId") for r in roles if isinstance(r, dict)]
    if GLOBAL_ADMINISTRATOR in templates:
        return True
    if any(t is None for t in templates):
        return None  # roles listed without their ids: Graph would not say which
    return False


async def _consent(http: LoopHttpClient, base: str, token: str, client_id: str) -> bool | None:
    try:
        sp = await _get(http, f"{base}/servicePrincipals(appId='{client_id}')", token)
        if sp is None:
            return False  # no Enterprise Application: nobody consented for the organization
        flt = f"clientId eq '{sp['id']}'"
        grants = await _get(http, f"{base}/oauth2PermissionGrants?$filter={flt}", token)
    except _Denied:
        return None
    except (KeyError, TypeError):
        raise IdentityProviderError("graph_failed", "graph_failed", "unexpected body") from None
    kinds = {g.get("consentType") for g in (grants or {}).get("value") or []}
    return "AllPrincipals" in kinds
