"""The sandbox's Microsoft Graph v1.0: the few resources renewbot reads, with Graph's permissions.

Each route follows its Graph v1.0 reference page (named at the route) for its shape and its
delegated permissions: a token whose ``scp`` holds none of the permissions the page lists gets
403 in Graph's error shape ``{"error": {"code", "message", "innerError"}}``. Scopes per route
(least privileged first; any one of them is enough):

    GET /v1.0/me                                  User.Read (userType only with $select)
    GET /v1.0/me/memberOf[/microsoft.graph.directoryRole], .../transitiveMemberOf[...]
                                                  User.Read; roleTemplateId and displayName
                                                  only with RoleManagement.Read.Directory or
                                                  Directory.Read.All, else null
    GET /v1.0/organization                        User.Read (id, displayName, verifiedDomains)
    GET /v1.0/sites/root                          Sites.Read.All
    GET /v1.0/servicePrincipals(appId='{id}')     Application.Read.All or Directory.Read.All
    GET /v1.0/oauth2PermissionGrants?$filter=clientId eq '{sp-id}'   Directory.Read.All

It reads the directory and never changes it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.sandbox.directory import (
    CONSUMERS_TENANT,
    GLOBAL_ADMINISTRATOR,
    GRAPH_APP_ID,
    MSP_TENANT,
    AccessToken,
    Directory,
    SandboxAccount,
    SandboxTenant,
)

GRAPH = "https://graph.microsoft.com"
META = f"{GRAPH}/v1.0/$metadata"
Handler = Callable[[web.Request], Awaitable[web.Response]]

# Higher-privileged permissions that include the least one, from each page's table.
ME = {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All",
      "Directory.Read.All", "Directory.ReadWrite.All"}  # fmt: skip
MEMBER_OF = {"User.Read", "Directory.Read.All", "Directory.ReadWrite.All", "Group.Read.All",
             "GroupMember.Read.All", "User.Read.All"}  # fmt: skip
ORGANIZATION = {"User.Read", "Organization.Read.All", "Directory.Read.All",
                "Organization.ReadWrite.All", "Directory.ReadWrite.All"}  # fmt: skip
SITES = {"Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"}
SERVICE_PRINCIPAL = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                     "Directory.ReadWrite.All"}  # fmt: skip
GRANTS = {"Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All"}
# "List directoryRoles": who may read a role's properties. Without one of these, memberOf
# returns the role with only its type and id ("limited information for inaccessible objects").
READ_ROLES = {"RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
              "RoleManagement.ReadWrite.Directory", "Directory.ReadWrite.All"}  # fmt: skip
# "user resource type": the properties GET /me returns without $select.
USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)


def graph_error(status: int, code: str, message: str) -> web.Response:
    inner = {
        "date": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}",
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    return web.json_response(
        {"error": {"code": code, "message": message, "innerError": inner}}, status=status
    )


def denied() -> web.Response:
    return graph_error(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


def object_id(*parts: str) -> str:
    """A stable object id for a directory object that the sandbox derives rather than stores."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class GraphApi:
    def __init__(self, directory: Directory) -> None:
        self.d = directory

    def _bearer(self, request: web.Request, allowed: set[str]) -> AccessToken | web.Response:
        header = request.headers.get("Authorization", "")
        at = self.d.access_tokens.get(header.removeprefix("Bearer ").strip()) if header else None
        if at is None or at.expires_at < datetime.now(UTC).timestamp() or at.resource != GRAPH:
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure."
            )
        tenant = self.d.tenant(at.tenant_id)
        if tenant is not None and tenant.graph_down:
            return graph_error(
                503, "serviceNotAvailable", "The service is temporarily unavailable."
            )
        if not at.scopes & allowed:
            return denied()
        return at

    def _tenant(self, at: AccessToken) -> SandboxTenant:
        tenant = self.d.tenant(at.tenant_id)
        assert tenant is not None
        return tenant

    async def me(self, request: web.Request) -> web.Response:
        """ "Get user" / "user resource type": userType is returned only on $select."""
        at = self._bearer(request, ME)
        if isinstance(at, web.Response):
            return at
        user = _user(at.account)
        select = [p for p in request.query.get("$select", "").split(",") if p]
        unknown = [p for p in select if p not in user]
        if unknown:
            return graph_error(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{unknown[0][:40]}' on type "
                "'microsoft.graph.user'.",
            )
        names = select or list(USER_DEFAULT)
        body = {"@odata.context": f"{META}#users/$entity"} | {p: user[p] for p in names}
        return web.json_response(body)

    async def member_of(self, request: web.Request) -> web.Response:
        """ "List a user's direct memberships" / "List a user's memberships (direct and
        transitive)": groups, directory roles and administrative units; an OData cast narrows
        to one type."""
        at = self._bearer(request, MEMBER_OF)
        if isinstance(at, web.Response):
            return at
        cast = request.match_info.get("cast", "")
        if cast not in {"", "/microsoft.graph.directoryRole"}:
            return web.json_response(
                {"@odata.context": f"{META}#directoryObjects", "value": []}
            )  # the sandbox's accounts are in no groups or administrative units
        roles = []
        if at.account.global_admin and at.account.user_type == "Member":
            full = bool(at.scopes & READ_ROLES)
            roles.append(
                {
                    "@odata.type": "#microsoft.graph.directoryRole",
                    "id": object_id(at.tenant_id, "role", GLOBAL_ADMINISTRATOR),
                    "deletedDateTime": None,
                    "description": "Can manage all aspects of Microsoft Entra ID and Microsoft "
                    "services that use Microsoft Entra identities."
                    if full
                    else None,
                    "displayName": "Global Administrator" if full else None,
                    "roleTemplateId": GLOBAL_ADMINISTRATOR if full else None,
                }
            )
        return web.json_response({"@odata.context": f"{META}#directoryObjects", "value": roles})

    async def organization(self, request: web.Request) -> web.Response:
        """ "Get organization": with User.Read only id, displayName and verifiedDomains."""
        at = self._bearer(request, ORGANIZATION)
        if isinstance(at, web.Response):
            return at
        if at.tenant_id == CONSUMERS_TENANT:
            return denied()  # "Delegated (personal Microsoft account): Not supported."
        t = self._tenant(at)
        full = bool(at.scopes & (ORGANIZATION - {"User.Read"}))
        domain = {"capabilities": "Email, OfficeCommunicationsOnline", "type": "Managed"}
        org = {
            "id": t.tenant_id,
            "displayName": t.name,
            "tenantType": "AAD" if full else None,
            "verifiedDomains": [
                domain | {"isDefault": True, "isInitial": False, "name": t.domain},
                domain | {"isDefault": False, "isInitial": True, "name": t.initial},
            ],
        }
        return web.json_response({"@odata.context": f"{META}#organization", "value": [org]})

    async def site_root(self, request: web.Request) -> web.Response:
        """ "Get a site resource" (/sites/root, the tenant's root site; "siteCollection
        resource": hostname)."""
        at = self._bearer(request, SITES)
        if isinstance(at, web.Response):
            return at
        t = self._tenant(at)
        host = f"{t.sharepoint_label}.sharepoint.com"
        site, web_id = object_id(t.tenant_id, "site"), object_id(t.tenant_id, "web")
        return web.json_response(
            {
                "@odata.context": f"{META}#sites/$entity",
                "id": f"{host},{site},{web_id}",
                "name": "",
                "displayName": "Communication site",
                "webUrl": f"https://{host}",
                "root": {},
                "siteCollection": {"hostname": host},
            }
        )

    def _service_principal(self, t: SandboxTenant, app_id: str) -> dict[str, Any] | None:
        registration = self.d.registrations.get(app_id)
        if registration is None or not t.has_service_principal():
            return None
        return {
            "@odata.context": f"{META}#servicePrincipals/$entity",
            "id": object_id(t.tenant_id, "sp", app_id),
            "accountEnabled": True,
            "appId": app_id,
            "appDisplayName": registration.display_name,
            "appOwnerOrganizationId": MSP_TENANT,
            "displayName": registration.display_name,
            "servicePrincipalType": "Application",
            "signInAudience": "AzureADMultipleOrgs",
        }

    async def service_principal(self, request: web.Request) -> web.Response:
        """ "Get servicePrincipal": by id or by appId; absent (Enterprise Application deleted):
        404 Request_ResourceNotFound."""
        at = self._bearer(request, SERVICE_PRINCIPAL)
        if isinstance(at, web.Response):
            return at
        t = self._tenant(at)
        key = request.match_info["key"]
        if m := re.fullmatch(r"\(appId='([^']{1,64})'\)", key):
            sp = self._service_principal(t, m.group(1))
        else:
            sp = next(
                (
                    sp
                    for app_id in self.d.registrations
                    if (sp := self._service_principal(t, app_id)) and f"/{sp['id']}" == key
                ),
                None,
            )
        if sp is None:
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key.strip('/()')[:80]}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        return web.json_response(sp)

    async def grants(self, request: web.Request) -> web.Response:
        """ "List oauth2PermissionGrants": AllPrincipals for tenant-wide consent, Principal for a
        user who consented for themself; ``$filter=clientId eq '{sp id}'`` (eq only)."""
        at = self._bearer(request, GRANTS)
        if isinstance(at, web.Response):
            return at
        t = self._tenant(at)
        wanted: str | None = None
        if flt := request.query.get("$filter", ""):
            m = re.fullmatch(r"\s*clientId\s+eq\s+'([0-9a-fA-F-]{36})'\s*", flt)
            if not m:
                return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.")
            wanted = m.group(1).lower()
        value = []
        for app_id, registration in self.d.registrations.items():
            sp = self._service_principal(t, app_id)
            if sp is None or wanted not in {None, sp["id"]}:
                continue
            grant = {
                "clientId": sp["id"],
                "resourceId": object_id(t.tenant_id, "sp", GRAPH_APP_ID),
                "scope": " ".join(registration.graph_permissions),
            }
            if t.app_present:
                value.append(
                    grant
                    | {"id": object_id(sp["id"], "all"), "consentType": "AllPrincipals"}
                    | {"principalId": None}
                )
            for oid in t.user_consents:
                value.append(
                    grant
                    | {"id": object_id(sp["id"], oid), "consentType": "Principal"}
                    | {"principalId": oid}
                )
        return web.json_response(
            {"@odata.context": f"{META}#oauth2PermissionGrants", "value": value}
        )


def _user(a: SandboxAccount) -> dict[str, Any]:
    given, _, surname = a.name.partition(" ")
    return {
        "id": a.oid,
        "businessPhones": [],
        "displayName": a.name,
        "givenName": given,
        "jobTitle": None,
        "mail": a.mail or a.upn,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": surname or None,
        "userPrincipalName": a.upn,
        "userType": a.user_type,
        "accountEnabled": True,
    }


def add_routes(app: web.Application, directory: Directory) -> None:
    api = GraphApi(directory)
    app.router.add_get("/v1.0/me", api.me)
    for rel in ("memberOf", "transitiveMemberOf"):
        app.router.add_get(f"/v1.0/me/{rel}", api.member_of)
        app.router.add_get(f"/v1.0/me/{rel}{{cast:/[A-Za-z.]+}}", api.member_of)
    app.router.add_get("/v1.0/organization", api.organization)
    app.router.add_get("/v1.0/sites/root", api.site_root)
    app.router.add_get("/v1.0/servicePrincipals{key:.+}", api.service_principal)
    app.router.add_get("/v1.0/oauth2PermissionGrants", api.grants)
