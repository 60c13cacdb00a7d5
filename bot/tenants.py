"""Tenant management for the CLI: validate input, add one, import a CSV all-or-nothing.

An import adds new tenants and updates known ones (matched by tenant id), planned in full before
anything is written. It must not change a tenant's id or its token health."""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

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


# What an import may change of a known tenant; its key, tenant id and health stay.
UPDATABLE = ("slug", "display_name", "primary_domain", "admin_upn", "initial_domain")


@dataclass(frozen=True)
class ImportPlan:
    added: list[Tenant] = field(default_factory=list)
    updated: list[tuple[Tenant, list[str]]] = field(default_factory=list)  # new, the changes
    unchanged: list[Tenant] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The difference, one line per tenant added or updated."""
        said = [f"add {t.slug}: {t.display_name}, {t.tenant_id}" for t in self.added]
        said += [f"update {t.slug}: {'; '.join(changes)}" for t, changes in self.updated]
        return said


def plan_import(incoming: Iterable[Tenant], known: Iterable[Tenant]) -> ImportPlan:
    """Match each incoming tenant to a known one by tenant id. Raises TenantInputError when a
    slug belongs to another known tenant (a different tenant id): nothing is written then."""
    by_id = {t.tenant_id.lower(): t for t in known}
    by_slug = {t.slug: t for t in by_id.values()}
    plan, problems = ImportPlan(), []
    for new in incoming:
        old = by_id.get(new.tenant_id.lower())
        holder = by_slug.get(new.slug)
        if holder is not None and holder is not old:
            problems.append(
                f"{new.slug}: that slug is already tenant {holder.tenant_id}, not "
                f"{new.tenant_id} (a tenant id never changes; choose another slug)"
            )
            continue
        if old is None:
            plan.added.append(new)
            continue
        wanted = replace(old, **{f: getattr(new, f) for f in UPDATABLE})
        if not new.initial_domain:  # not in the file: keep the one learnt from Graph
            wanted = replace(wanted, initial_domain=old.initial_domain)
        changes = [
            f"{f} {getattr(old, f)!r} -> {getattr(wanted, f)!r}"
            for f in UPDATABLE
            if getattr(old, f) != getattr(wanted, f)
        ]
        if changes:
            plan.updated.append((wanted, changes))
        else:
            plan.unchanged.append(old)
    if problems:
        raise TenantInputError(tuple(problems))
    return plan
