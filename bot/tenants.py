"""Tenant management for the CLI: validate input, add one, import a CSV all-or-nothing."""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from core.model import Tenant

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DOMAIN = re.compile(r"^(?=.{3,253}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
COLUMNS = ("slug", "display_name", "tenant_id", "primary_domain", "admin_upn")
# Optional: the tenant's initial *.onmicrosoft.com domain (its SharePoint host). Learnt from
# Graph at the first sign-in when not given.
OPTIONAL = ("initial_domain",)
INITIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}\.onmicrosoft\.com$")


@dataclass(frozen=True)
class TenantInputError(Exception):
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return "; ".join(self.problems)


def make_tenant(
    slug: str,
    display_name: str,
    tenant_id: str,
    primary_domain: str,
    admin_upn: str,
    where: str = "",
    initial_domain: str = "",
) -> Tenant:
    """Validate one tenant. Raises TenantInputError listing every problem."""
    at = f"{where}: " if where else ""
    problems = []
    if not SLUG.match(slug or ""):
        problems.append(f"{at}slug must be lowercase letters, digits and dashes")
    if not (display_name or "").strip() or len(display_name) > 200:
        problems.append(f"{at}display name is required (at most 200 characters)")
    if not GUID.match(tenant_id or ""):
        problems.append(f"{at}tenant id must be a GUID like 00000000-0000-0000-0000-000000000000")
    if not DOMAIN.match(primary_domain or ""):
        problems.append(f"{at}primary domain must look like contoso.com")
    if not EMAIL.match(admin_upn or ""):
        problems.append(f"{at}M365 admin username must look like admin@contoso.com")
    if initial_domain and not INITIAL.match(initial_domain):
        problems.append(f"{at}initial domain must look like contosoltd.onmicrosoft.com")
    if problems:
        raise TenantInputError(tuple(problems))
    return Tenant(
        str(uuid.uuid4()),
        slug,
        display_name.strip(),
        tenant_id.lower(),
        primary_domain.lower(),
        admin_upn,
        initial_domain=initial_domain.lower(),
    )


def read_csv(lines: Iterable[str]) -> list[Tenant]:
    """Parse a CSV with a header of COLUMNS (any order). Raises TenantInputError."""
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise TenantInputError(
            (f"missing columns: {', '.join(missing)}; expected {','.join(COLUMNS)}",)
        )
    tenants: list[Tenant] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        try:
            slug, name, tid, domain, admin = (str(row.get(c) or "").strip() for c in COLUMNS)
            initial = str(row.get("initial_domain") or "").strip()
            t = make_tenant(slug, name, tid, domain, admin, f"line {line_no}", initial)
        except TenantInputError as exc:
            problems.extend(exc.problems)
            continue
        for key in (t.slug, t.tenant_id):
            if key in seen:
                problems.append(f"line {line_no}: {key} already on line {seen[key]}")
            seen[key] = line_no
        tenants.append(t)
    if problems:
        raise TenantInputError(tuple(problems))
    return tenants
