"""The sandbox's world: tenants, accounts, device flows and issued tokens, with scenario knobs.

Each knob plays one case the real service has (DESIGN.md section 7): the Enterprise Application
present or deleted, Global Administrator or not, an account of another tenant, a user declining,
Conditional Access blocking device code flow, codes expiring, slow_down and Graph failing.
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


@dataclass
class SandboxTenant:
    tenant_id: str
    name: str
    domain: str
    app_present: bool = True
    app_unknown: bool = False  # AADSTS700016 when a device flow starts
    conditional_access: str | None = None  # "53003" or "530033": blocks device code sign-in
    mfa_required: bool = False  # AADSTS50076 after sign-in
    refresh_error: str | None = None  # "700082", "50173": refresh grants fail
    graph_down: bool = False
    code_lifetime: int = 900
    interval: int = 5
    slow_down_polls: int = 0  # answer slow_down to the next n polls


@dataclass
class SandboxAccount:
    upn: str
    tenant_id: str
    name: str
    global_admin: bool = True
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))


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
    interval: int = 5, code_lifetime: int = 900, extra_tenants: int = 0
) -> Directory:
    """The demo tenants and accounts; each tenant plays a different case.

    ``extra_tenants`` adds plain tenants ``load-1`` ... (tenant ids ``00000000-0000-4000-9000-...``)
    with an admin each, for load tests and benchmarks.
    """
    d = Directory()
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
    northwind = tenant(3, "Northwind Traders", "northwind.com", conditional_access="530033")
    tailspin = tenant(4, "Tailspin Toys", "tailspin.com")
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
    return d
