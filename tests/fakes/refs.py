"""Collision-free test data, so tests can share a database without sharing rows."""

from __future__ import annotations

import uuid

from core.model import Tenant


def random_tenant(name: str = "tenant") -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    return Tenant(
        key=str(uuid.uuid4()),
        slug=f"{name}-{suffix}",
        display_name=f"{name.title()} {suffix}",
        tenant_id=str(uuid.uuid4()),
        primary_domain=f"{name}-{suffix}.example",
        admin_upn=f"admin@{name}-{suffix}.example",
    )
