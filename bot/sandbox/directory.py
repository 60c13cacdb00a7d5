"""The sandbox's world: tenants, accounts, the app registration, device flows and issued tokens.

Each knob plays one case the real service has (DESIGN.md section 7): the Enterprise Application
present or deleted, Global Administrator or not, an account of another tenant, a guest, a
personal account, a user declining, Conditional Access blocking device code flow, codes expiring,
slow_down and Graph failing. Registration knobs (``Registration``) play what is wrong for every
tenant at once: public client flows off, an unknown client id, and whether tokens carry ``wids``.
Behaviour follows Microsoft's documentation; the page is named where each knob is read. This
module holds state only: no HTTP, and no secret ever leaves it except as a token answer.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bot.sandbox import shapes

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
DEFAULT_CLIENT_ID = "00000000-0000-4000-8000-00000000b07e"
# "Access token claims reference" (iss, idp): the tenant of personal Microsoft accounts.
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's appId in every tenant
MSP_TENANT = "0000000a-0000-4000-8000-00000000000a"  # the tenant that owns renewbot's registration
# "Access token claims reference", wids: emitted only when the registration's
# groupMembershipClaims is "All" or "DirectoryRole". Entra's default for a new registration is
# "None" (no wids), and so is the sandbox's: the product decides roles from Graph. Pass
# group_membership_claims="DirectoryRole" to demo_directory / Registration to play a registration
# that asks for them.
SANDBOX_GROUP_MEMBERSHIP_CLAIMS = "None"
WIDS_CLAIMS = frozenset({"All", "DirectoryRole"})
# The delegated Microsoft Graph permissions the sandbox registration lists (its "API
# permissions"); a `.default` token for Graph carries what was consented of these as `scp`.
DEFAULT_GRAPH_PERMISSIONS = ("User.Read", "Directory.Read.All", "Sites.Read.All")


@dataclass
class Registration:
    """The MSP's multitenant app registration, as its manifest describes it."""

    client_id: str = DEFAULT_CLIENT_ID
    display_name: str = "renewbot"
    group_membership_claims: str = SANDBOX_GROUP_MEMBERSHIP_CLAIMS
    # "Allow public client flows" (isFallbackPublicClient). Off: the token endpoint answers
    # AADSTS7000218 for every tenant ("AADSTS error codes").
    public_client_flows: bool = True
    graph_permissions: tuple[str, ...] = DEFAULT_GRAPH_PERMISSIONS
    redirect_uris: tuple[str, ...] = ()  # empty: any redirect URI is accepted (sandbox ease)
    # Where the redirect URIs are registered ("Redirect URI (reply URL) best practices"):
    # "public" is "Mobile and desktop applications" (a code is redeemed with PKCE and no
    # secret); "web" makes Entra treat the app as a confidential client, so redeeming a code
    # without a client secret answers AADSTS7000218.
    redirect_platform: str = "public"
    publisher: str = "unverified"  # what Microsoft's consent screen shows under the app's name

    @property
    def emits_wids(self) -> bool:
        return self.group_membership_claims in WIDS_CLAIMS


@dataclass
class SandboxTenant:
    tenant_id: str
    name: str
    domain: str  # the primary (default) verified domain
    # The initial *.onmicrosoft.com domain; empty means "<first label of domain>.onmicrosoft.com".
    # SharePoint's hosts come from it, not from the primary domain.
    initial_domain: str = ""
    app_present: bool = True  # service principal with tenant-wide (AllPrincipals) consent
    user_consents: list[str] = field(default_factory=list)  # oids with a consentType Principal
    app_unknown: bool = False  # AADSTS700016 when a device flow starts
    # "53003": a Conditional Access policy blocks the device code flow (authentication flows
    # condition); "530033": the device-compliance variant (a managed device is required).
    conditional_access: str | None = None
    mfa_required: bool = False  # AADSTS50076 after sign-in
    refresh_error: str | None = None  # "700082", "50173": refresh grants fail
    graph_down: bool = False
    code_lifetime: int = 900
    interval: int = 5
    slow_down_polls: int = 0  # answer slow_down to the next n polls
    # A Conditional Access policy that blocks browser sign-ins too ("53003", say one for
    # untrusted locations); "conditional_access" above blocks only the device code flow, except
    # "530033" (a managed device), which the sandbox's browser cannot prove either.
    browser_conditional_access: str | None = None
    # "Authorization codes are short lived, typically they expire after about 10 minutes"
    # (authorization code flow, "Request an access token").
    auth_code_lifetime: int = 600

    @property
    def initial(self) -> str:
        return self.initial_domain or f"{self.domain.split('.')[0]}.onmicrosoft.com"

    @property
    def sharepoint_label(self) -> str:
        return self.initial.split(".")[0]

    def resource_hosts(self) -> set[str]:
        """The resources this tenant has: Microsoft's shared ones and its own SharePoint."""
        label = self.sharepoint_label
        own = {
            f"{label}.sharepoint.com",
            f"{label}-admin.sharepoint.com",
            f"{label}-my.sharepoint.com",
        }
        return own | SHARED_RESOURCES

    def has_service_principal(self) -> bool:
        return self.app_present or bool(self.user_consents)

    def consented(self, account: SandboxAccount) -> bool:
        return self.app_present or account.oid in self.user_consents

    def record_consent(self, account: SandboxAccount, for_organization: bool) -> None:
        """A consent grant: tenant-wide (consentType AllPrincipals) or for the signer only."""
        if for_organization:
            self.app_present = True
        elif account.oid not in self.user_consents:
            self.user_consents.append(account.oid)


# First-party resources every Microsoft 365 tenant has a service principal for.
SHARED_RESOURCES = frozenset(
    {"graph.microsoft.com", "outlook.office365.com", "outlook.office.com", "manage.office.com"}
)


@dataclass
class SandboxAccount:
    upn: str
    tenant_id: str
    name: str
    global_admin: bool = True
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    # "user resource type", userType: "Member" or "Guest". A B2B guest's UPN is
    # <mail with @ as _>#EXT#@<initial domain>; it signs in with the inviting tenant's tid.
    user_type: str = "Member"
    mail: str | None = None
    home_tenant_id: str | None = None  # a guest's own tenant (the idp claim)


@dataclass
class DeviceFlow:
    device_code: str
    user_code: str
    tenant_id: str
    client_id: str
    scopes: list[str]
    expires_at: float
    interval: int
    last_poll: float = 0.0
    status: str = "pending"  # pending | approved | declined | failed
    account: SandboxAccount | None = None
    error_code: str | None = None


@dataclass
class AuthRequest:
    """A visit to the authorize endpoint, while the person picks an account and consents."""

    tenant_id: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    state: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    login_hint: str


@dataclass
class AuthCode:
    """An authorization code: single use, short-lived, bound to the PKCE challenge."""

    account: SandboxAccount
    tenant_id: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    nonce: str
    code_challenge: str
    code_challenge_method: str
    expires_at: float


@dataclass
class Grant:
    """What a refresh token stands for."""

    account: SandboxAccount
    tenant_id: str
    client_id: str


@dataclass
class AccessToken:
    account: SandboxAccount
    tenant_id: str
    resource: str
    expires_at: float
    scopes: frozenset[str] = frozenset()  # the delegated permissions (scp) it carries


def _user_code() -> str:
    alphabet = string.ascii_uppercase.replace("O", "").replace("I", "") + "23456789"
    return "".join(secrets.choice(alphabet) for _ in range(9))


class Directory:
    def __init__(self) -> None:
        self.tenants: dict[str, SandboxTenant] = {}
        self.accounts: dict[str, SandboxAccount] = {}
        self.flows: dict[str, DeviceFlow] = {}
        self.by_user_code: dict[str, DeviceFlow] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path): what clients asked for
        self.polls: list[tuple[str, float]] = []  # (user code, monotonic time) of each poll
        self.issued_secrets: list[str] = []  # every device code and token handed out (for tests)
        self.registrations: dict[str, Registration] = {DEFAULT_CLIENT_ID: Registration()}
        self.auth_requests: dict[str, AuthRequest] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.redeemed_codes: set[str] = set()
        self.verifiers: list[str] = []  # every PKCE verifier received (for tests: never logged)
        self.consumers = SandboxTenant(CONSUMERS_TENANT, "Microsoft accounts", "live.com")

    def tenant(self, key: str) -> SandboxTenant | None:
        """A tenant by id; ``consumers`` (or its id) is the personal-account tenant."""
        if key in {"consumers", CONSUMERS_TENANT}:
            return self.consumers
        return self.tenants.get(key)

    def add_tenant(self, tenant: SandboxTenant) -> SandboxTenant:
        self.tenants[tenant.tenant_id] = tenant
        return tenant

    def add_account(self, account: SandboxAccount) -> SandboxAccount:
        self.accounts[account.upn.lower()] = account
        return account

    def start_flow(self, tenant: SandboxTenant, client_id: str, scopes: list[str]) -> DeviceFlow:
        flow = DeviceFlow(
            device_code=shapes.device_code(),
            user_code=_user_code(),
            tenant_id=tenant.tenant_id,
            client_id=client_id,
            scopes=scopes,
            expires_at=time.monotonic() + tenant.code_lifetime,
            interval=tenant.interval,
        )
        self.flows[flow.device_code] = flow
        self.issued_secrets.append(flow.device_code)
        self.by_user_code[flow.user_code] = flow
        return flow

    def issue(
        self,
        account: SandboxAccount,
        tenant_id: str,
        client_id: str,
        resource: str,
        lifetime: int = 3600,
    ) -> tuple[str, str]:
        at = shapes.access_token(tenant_id, resource)
        rt = shapes.refresh_token()
        self.access_tokens[at] = AccessToken(account, tenant_id, resource, time.time() + lifetime)
        self.refresh_tokens[rt] = Grant(account, tenant_id, client_id)
        self.issued_secrets += [at, rt]
        return at, rt


def demo_directory(
    interval: int = 5,
    code_lifetime: int = 900,
    extra_tenants: int = 0,
    group_membership_claims: str = SANDBOX_GROUP_MEMBERSHIP_CLAIMS,
) -> Directory:
    """The demo tenants and accounts; each tenant plays a different case.

    ``extra_tenants`` adds plain tenants ``load-1`` ... (tenant ids ``00000000-0000-4000-9000-...``)
    with an admin each, for load tests and benchmarks. ``group_membership_claims`` is the
    registration's setting: "None" (Entra's default) gives tokens without ``wids``.
    """
    d = Directory()
    d.registrations[DEFAULT_CLIENT_ID].group_membership_claims = group_membership_claims
    for i in range(1, extra_tenants + 1):
        tid = f"00000000-0000-4000-9000-{i:012d}"
        d.add_tenant(
            SandboxTenant(
                tid,
                f"Load {i}",
                f"load-{i}.example",
                interval=interval,
                code_lifetime=code_lifetime,
            )
        )
        d.add_account(SandboxAccount(f"admin@load-{i}.example", tid, f"Load {i} Admin"))

    def tenant(n: int, name: str, domain: str, **kw: Any) -> SandboxTenant:
        tid = f"{n:08d}-0000-4000-8000-{n:012d}"
        return d.add_tenant(
            SandboxTenant(tid, name, domain, interval=interval, code_lifetime=code_lifetime, **kw)
        )

    contoso = tenant(1, "Contoso Ltd", "contoso.com")
    fabrikam = tenant(2, "Fabrikam Inc", "fabrikam.com", app_present=False)
    northwind = tenant(3, "Northwind Traders", "northwind.com", conditional_access="53003")
    # Primary domain and initial domain differ, as for most real tenants that bought a domain:
    # SharePoint is tailspintoys-admin.sharepoint.com, not tailspin-admin.sharepoint.com.
    tailspin = tenant(
        4, "Tailspin Toys", "tailspin.com", initial_domain="tailspintoys.onmicrosoft.com"
    )
    d.add_account(SandboxAccount("admin@contoso.com", contoso.tenant_id, "Contoso Admin"))
    d.add_account(
        SandboxAccount(
            "helpdesk@contoso.com", contoso.tenant_id, "Contoso Helpdesk", global_admin=False
        )
    )
    d.add_account(SandboxAccount("it@fabrikam.com", fabrikam.tenant_id, "Fabrikam IT"))
    d.add_account(
        SandboxAccount("user@fabrikam.com", fabrikam.tenant_id, "Fabrikam User", global_admin=False)
    )
    d.add_account(SandboxAccount("admin@northwind.com", northwind.tenant_id, "Northwind Admin"))
    d.add_account(SandboxAccount("admin@tailspin.com", tailspin.tenant_id, "Tailspin Admin"))
    d.add_account(  # a B2B guest of Contoso: Contoso's tid, only userType and #EXT# tell it apart
        SandboxAccount(
            "jane_partner.example#EXT#@contoso.onmicrosoft.com",
            contoso.tenant_id,
            "Jane Partner (guest)",
            global_admin=False,
            user_type="Guest",
            mail="jane@partner.example",
            home_tenant_id="0000000b-0000-4000-8000-00000000000b",
        )
    )
    d.add_account(  # a personal Microsoft account: tid 9188040d-... when it signs in
        SandboxAccount("pat@outlook.example", CONSUMERS_TENANT, "Pat Personal", global_admin=False)
    )
    return d
