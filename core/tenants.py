"""Finding a tenant from what a person typed: slug, display name, domain or tenant id.

On a miss, the closest known names are suggested (difflib), so a typo gets a useful answer.
"""

from __future__ import annotations

import difflib

from core.errors import UnknownTenantError
from core.model import Tenant
from core.ports import UnitOfWork


async def resolve(uow: UnitOfWork, ref: str) -> Tenant:
    """Return the tenant ``ref`` names.

    Raises:
        UnknownTenantError: no tenant matches; carries up to three close matches.
    """
    ref = ref.strip()
    tenant = await uow.tenants.find_exact(ref) if ref else None
    if tenant is not None:
        return tenant
    raise await unknown(uow, ref)


async def unknown(uow: UnitOfWork, ref: str) -> UnknownTenantError:
    """The error for a reference no tenant matches, with up to three close matches."""
    ref = ref.strip()
    names = await uow.tenants.names()
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(ref.lower(), list(lowered), n=3, cutoff=0.6)
    prefixed = [n for low, n in lowered.items() if ref and low.startswith(ref.lower())]
    suggestions = list(dict.fromkeys([*(lowered[c] for c in close), *prefixed]))[:3]
    return UnknownTenantError(ref, suggestions)
