"""The sandbox behaves as Microsoft Entra is documented to: real MSAL and real HTTP to its Graph.

Each test plays one behaviour of issue 12 item 6 (the page it follows is named in bot/sandbox).
MSAL is synchronous and the sandbox runs on this loop, so every MSAL call goes to a thread.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msal
import pytest
import requests

from bot.sandbox.directory import (
    CONSUMERS_TENANT,
    DEFAULT_CLIENT_ID,
    GLOBAL_ADMINISTRATOR,
    SandboxTenant,
    demo_directory,
)
from bot.sandbox.server import Sandbox
from tests.integration.live import T_CONTOSO, T_FABRIKAM, T_NORTHWIND

T_TAILSPIN = "00000004-0000-4000-8000-000000000004"
GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]
GUEST = "jane_partner.example#EXT#@contoso.onmicrosoft.com"


class Entra:
    """The sandbox, MSAL apps on it, and an HTTP client for its login pages and Graph."""

    def __init__(self, sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.d = sandbox.directory
        self.http = http

    def tenant(self, tid: str) -> SandboxTenant:
        return self.d.tenants[tid]

    async def app(self, tenant: str, client_id: str = DEFAULT_CLIENT_ID) -> Any:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.sandbox.ca_path)
        return await asyncio.to_thread(
            msal.PublicClientApplication,
            client_id,
            authority=f"{self.sandbox.authority_host}/{tenant}",
            http_client=session,
            instance_discovery=False,
        )

    async def login_page(self, user_code: str, upn: str) -> str:
        login = self.sandbox.login_url + "/devicelogin"
        async with self.http.post(login, data={"otc": user_code}) as resp:
            assert resp.status == 200, await resp.text()
        async with self.http.post(f"{login}/signin", data={"otc": user_code, "upn": upn}) as resp:
            return await resp.text()

    async def consent(self, user_code: str, org: bool) -> str:
        data = {"otc": user_code, "decision": "accept"} | ({"org": "1"} if org else {})
        url = self.sandbox.login_url + "/devicelogin/consent"
        async with self.http.post(url, data=data) as resp:
            return await resp.text()

    async def sign_in(
        self,
        tenant: str,
        upn: str,
        scopes: list[str] | None = None,
        *,
        org: bool | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
    ) -> tuple[Any, dict[str, Any]]:
        """A device-code sign-in; ``org`` answers the consent screen (None: expect none)."""
        app = await self.app(tenant, client_id)
        flow = await asyncio.to_thread(app.initiate_device_flow, scopes or GRAPH_DEFAULT)
        if "user_code" not in flow:
            return app, flow
        page = await self.login_page(flow["user_code"], upn)
        if org is not None:
            assert "/devicelogin/consent" in page, page
            await self.consent(flow["user_code"], org)
        result = await asyncio.to_thread(
            app.acquire_token_by_device_flow, flow, exit_condition=lambda flow: True
        )
        return app, result

    async def silent(self, app: Any, scopes: list[str]) -> dict[str, Any]:
        (account,) = await asyncio.to_thread(app.get_accounts)
        result = await asyncio.to_thread(app.acquire_token_silent_with_error, scopes, account)
        assert result is not None
        return dict(result)

    async def graph(self, token: str, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(
            f"{self.sandbox.graph_url}/v1.0/{path}", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, dict(await resp.json())


@pytest.fixture
async def entra(tmp_path: Path) -> AsyncIterator[Entra]:
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    tls = ssl.create_default_context(cafile=str(sandbox.ca_path))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            yield Entra(sandbox, http)
    finally:
        await sandbox.stop()


def assert_entra_error(result: dict[str, Any], error: str, code: int) -> None:
    """The JSON error shape of Entra's token endpoint, as MSAL hands it back."""
    assert result["error"] == error
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert result["error_uri"].endswith(f"error?code={code}")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(result)


# 1. wids only when groupMembershipClaims asks for directory roles


async def test_wids_follows_the_registrations_group_membership_claims(entra: Entra) -> None:
    """Entra's default registration ("None", the sandbox's too) leaves wids out; a
    registration that asks for directory roles gets them."""
    _, result = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    claims = result["id_token_claims"]
    assert "wids" not in claims and claims["tid"] == T_CONTOSO and "access_token" in result
    entra.d.registrations[DEFAULT_CLIENT_ID].group_membership_claims = "DirectoryRole"
    _, result = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    assert result["id_token_claims"]["wids"] == [GLOBAL_ADMINISTRATOR]
    assert not demo_directory().registrations[DEFAULT_CLIENT_ID].emits_wids


# 2. initial domain differs from the primary domain; 3. AADSTS500011


async def test_initial_domain_names_the_sharepoint_host(entra: Entra) -> None:
    """Graph tells the initial domain (isInitial) and the root site's host; the primary does not."""
    app, result = await entra.sign_in(T_TAILSPIN, "admin@tailspin.com")
    status, body = await entra.graph(result["access_token"], "organization")
    assert status == 200
    domains = {d["name"]: d for d in body["value"][0]["verifiedDomains"]}
    assert domains["tailspin.com"]["isDefault"] and not domains["tailspin.com"]["isInitial"]
    initial = domains["tailspintoys.onmicrosoft.com"]
    assert initial["isInitial"] and not initial["isDefault"]
    status, site = await entra.graph(result["access_token"], "sites/root")
    assert status == 200 and site["siteCollection"]["hostname"] == "tailspintoys.sharepoint.com"
    ok = await entra.silent(app, ["https://tailspintoys-admin.sharepoint.com/.default"])
    assert "access_token" in ok, ok


async def test_resource_the_tenant_does_not_have_is_500011(entra: Entra) -> None:
    """A SharePoint host built from the primary domain: invalid_resource, every retry."""
    app, _ = await entra.sign_in(T_TAILSPIN, "admin@tailspin.com")
    for _ in range(2):
        result = await entra.silent(app, ["https://tailspin-admin.sharepoint.com/.default"])
        assert_entra_error(result, "invalid_resource", 500011)
        assert (
            "resource principal named https://tailspin-admin.sharepoint.com"
            in (result["error_description"])
        )
    exchange = await entra.silent(app, ["https://outlook.office365.com/.default"])
    assert "access_token" in exchange


# 4. consent: unticked box for a Global Administrator, Principal vs AllPrincipals grants


async def grants_of_the_app(entra: Entra, token: str) -> list[dict[str, Any]]:
    status, sp = await entra.graph(token, f"servicePrincipals(appId='{DEFAULT_CLIENT_ID}')")
    assert status == 200, sp
    status, body = await entra.graph(
        token, f"oauth2PermissionGrants?$filter=clientId eq '{sp['id']}'"
    )
    assert status == 200, body
    return list(body["value"])


async def test_consent_box_starts_unticked_and_only_for_a_global_administrator(
    entra: Entra,
) -> None:
    app = await entra.app(T_FABRIKAM)
    for upn, shown in (("it@fabrikam.com", True), ("user@fabrikam.com", False)):
        flow = await asyncio.to_thread(app.initiate_device_flow, GRAPH_DEFAULT)
        page = await entra.login_page(flow["user_code"], upn)
        assert "Permissions requested" in page
        assert ("Consent on behalf of your organization" in page) is shown
        assert "checked" not in page


async def test_consent_for_myself_is_a_principal_grant(entra: Entra) -> None:
    """Without the box: a grant for the signer only, which Graph shows as consentType Principal."""
    _, result = await entra.sign_in(T_FABRIKAM, "it@fabrikam.com", org=False)
    grants = await grants_of_the_app(entra, result["access_token"])
    assert [(g["consentType"], g["principalId"]) for g in grants] == [
        ("Principal", result["id_token_claims"]["oid"])
    ]
    flow = await asyncio.to_thread(
        (await entra.app(T_FABRIKAM)).initiate_device_flow, GRAPH_DEFAULT
    )
    page = await entra.login_page(flow["user_code"], "user@fabrikam.com")
    assert "Permissions requested" in page  # the consent was not for the organization


async def test_consent_for_the_organization_is_an_all_principals_grant(entra: Entra) -> None:
    _, result = await entra.sign_in(T_FABRIKAM, "it@fabrikam.com", org=True)
    grants = await grants_of_the_app(entra, result["access_token"])
    assert [(g["consentType"], g["principalId"]) for g in grants] == [("AllPrincipals", None)]
    assert "Directory.Read.All" in grants[0]["scope"].split()


async def test_enterprise_application_deleted_shows_as_404(entra: Entra) -> None:
    _, result = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    entra.tenant(T_CONTOSO).app_present = False
    status, body = await entra.graph(
        result["access_token"], f"servicePrincipals(appId='{DEFAULT_CLIENT_ID}')"
    )
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"


async def test_admin_consent_endpoint_grants_tenant_wide(entra: Entra) -> None:
    """/{tenant}/v2.0/adminconsent: accept returns admin_consent=True; decline an error."""
    url = f"{entra.sandbox.authority_host}/{T_FABRIKAM}/v2.0/adminconsent"
    query = {
        "client_id": DEFAULT_CLIENT_ID,
        "scope": "https://graph.microsoft.com/.default",
        "redirect_uri": "http://127.0.0.1:9/consented",
        "state": "s-1",
    }
    async with entra.http.get(url, params=query) as resp:
        assert resp.status == 200 and "it@fabrikam.com" in await resp.text()
    form = query | {"decision": "decline"}
    async with entra.http.post(url, data=form, allow_redirects=False) as resp:
        assert resp.status == 302
        assert "error=consent_required" in resp.headers["Location"]
        assert "AADSTS65004" in resp.headers["Location"]
    async with entra.http.post(url, data=query | {"upn": "user@fabrikam.com"}) as resp:
        assert resp.status == 403 and "AADSTS90094" in await resp.text()
    async with entra.http.post(
        url, data=query | {"upn": "it@fabrikam.com"}, allow_redirects=False
    ) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith("http://127.0.0.1:9/consented?admin_consent=True")
    assert f"tenant={T_FABRIKAM}" in location and "state=s-1" in location
    _, result = await entra.sign_in(T_FABRIKAM, "user@fabrikam.com")  # no consent screen now
    grants = await grants_of_the_app(entra, result["access_token"])
    assert [g["consentType"] for g in grants] == ["AllPrincipals"]


# 5. registration problems: public client flows off (7000218), unknown client id (700016)


async def test_public_client_flows_off_is_7000218_for_every_tenant(entra: Entra) -> None:
    contoso, _ = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    entra.d.registrations[DEFAULT_CLIENT_ID].public_client_flows = False
    for tenant, upn in ((T_TAILSPIN, "admin@tailspin.com"), (T_FABRIKAM, "it@fabrikam.com")):
        _, result = await entra.sign_in(tenant, upn)
        assert_entra_error(result, "invalid_client", 7000218)
        assert (
            "must contain the following parameter: 'client_assertion' or 'client_secret'"
            in (result["error_description"])
        )
    refresh = await entra.silent(contoso, ["https://outlook.office365.com/.default"])
    assert_entra_error(refresh, "invalid_client", 7000218)


async def test_unknown_client_id_is_700016_for_every_tenant(entra: Entra) -> None:
    for tenant in (T_CONTOSO, T_TAILSPIN):
        _, flow = await entra.sign_in(
            tenant, "admin@contoso.com", client_id="11111111-1111-4111-8111-111111111111"
        )
        assert_entra_error(flow, "unauthorized_client", 700016)


# 6. Conditional Access: 53003 blocks the device code flow; 530033 is device compliance


async def test_conditional_access_blocks_the_device_code_flow_as_53003(entra: Entra) -> None:
    assert entra.tenant(T_NORTHWIND).conditional_access == "53003"
    _, result = await entra.sign_in(T_NORTHWIND, "admin@northwind.com")
    assert result["error_codes"] == [53003] and "access_token" not in result
    assert "does not allow token issuance" in result["error_description"]
    entra.tenant(T_NORTHWIND).conditional_access = "530033"
    _, result = await entra.sign_in(T_NORTHWIND, "admin@northwind.com")
    assert result["error_codes"] == [530033] and "managed device" in result["error_description"]


# 7. a B2B guest and a personal account; 8. Graph's delegated permissions


async def test_guest_signs_in_with_the_customers_tid_and_graph_says_guest(entra: Entra) -> None:
    _, result = await entra.sign_in(T_CONTOSO, GUEST)
    claims = result["id_token_claims"]
    assert claims["tid"] == T_CONTOSO and claims["preferred_username"] == "jane@partner.example"
    assert claims["idp"].startswith("https://sts.windows.net/") and "wids" not in claims
    status, me = await entra.graph(
        result["access_token"], "me?$select=id,userPrincipalName,userType"
    )
    assert status == 200 and me["userType"] == "Guest" and "#EXT#" in me["userPrincipalName"]
    status, plain = await entra.graph(result["access_token"], "me")
    assert status == 200 and "userType" not in plain  # only on $select ("user resource type")
    status, roles = await entra.graph(
        result["access_token"], "me/transitiveMemberOf/microsoft.graph.directoryRole"
    )
    assert status == 200 and roles["value"] == []


async def test_personal_account_has_the_consumers_tid(entra: Entra) -> None:
    _, result = await entra.sign_in("consumers", "pat@outlook.example")
    assert result["id_token_claims"]["tid"] == CONSUMERS_TENANT
    _, refused = await entra.sign_in(T_CONTOSO, "pat@outlook.example")
    assert refused["error_codes"] == [50020]


async def test_global_administrator_from_graph_directory_roles(entra: Entra) -> None:
    _, admin = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    _, helpdesk = await entra.sign_in(T_CONTOSO, "helpdesk@contoso.com")
    for rel in ("memberOf", "transitiveMemberOf"):
        path = f"me/{rel}/microsoft.graph.directoryRole"
        status, body = await entra.graph(admin["access_token"], path)
        assert status == 200
        assert [r["roleTemplateId"] for r in body["value"]] == [GLOBAL_ADMINISTRATOR]
        assert (await entra.graph(helpdesk["access_token"], path))[1]["value"] == []


async def test_graph_enforces_delegated_permissions(entra: Entra) -> None:
    """A token with User.Read only: /me and /organization answer; the rest is 403, and a role
    comes back without its properties (as Graph returns objects it may not read)."""
    entra.d.registrations[DEFAULT_CLIENT_ID].graph_permissions = ("User.Read",)
    _, result = await entra.sign_in(T_CONTOSO, "admin@contoso.com")
    token = result["access_token"]
    assert (await entra.graph(token, "me"))[0] == 200
    status, org = await entra.graph(token, "organization")
    assert status == 200 and org["value"][0]["verifiedDomains"]
    for path in (
        "sites/root",
        f"servicePrincipals(appId='{DEFAULT_CLIENT_ID}')",
        "oauth2PermissionGrants",
    ):
        status, body = await entra.graph(token, path)
        assert status == 403, path
        assert body["error"]["code"] == "Authorization_RequestDenied"
        assert {"date", "request-id", "client-request-id"} <= set(body["error"]["innerError"])
    status, roles = await entra.graph(token, "me/memberOf/microsoft.graph.directoryRole")
    assert status == 200 and [r["roleTemplateId"] for r in roles["value"]] == [None]
    _, explicit = await entra.sign_in(
        T_CONTOSO, "admin@contoso.com", ["https://graph.microsoft.com/Sites.Read.All"]
    )
    assert (await entra.graph(explicit["access_token"], "sites/root"))[0] == 200
    assert (await entra.graph(explicit["access_token"], "me"))[0] == 403
