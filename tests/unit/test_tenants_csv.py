"""`tenants import`: the optional initial domain names the tenant's SharePoint host."""

from __future__ import annotations

import pytest

from bot.tenants import TenantInputError, read_csv

HEADER = "slug,display_name,tenant_id,primary_domain,admin_upn,initial_domain\n"
ROW = "contoso,Contoso Ltd,3f2504e0-4f89-11d3-9a0c-0305e82c3301,contoso.co.uk,admin@contoso.co.uk"


def test_initial_domain_sets_the_sharepoint_host() -> None:
    """contoso.co.uk's SharePoint is contosoltd-admin, from its initial domain."""
    (tenant,) = read_csv([HEADER, f"{ROW},ContosoLtd.onmicrosoft.com\n"])
    assert tenant.initial_domain == "contosoltd.onmicrosoft.com"
    assert tenant.sharepoint_label == "contosoltd"


def test_initial_domain_is_optional() -> None:
    """Without it the first sign-in learns it from Graph; until then the primary label is used."""
    (tenant,) = read_csv([HEADER.replace(",initial_domain", ""), f"{ROW}\n"])
    assert tenant.initial_domain == "" and tenant.sharepoint_label == "contoso"


def test_an_initial_domain_that_is_not_onmicrosoft_is_named() -> None:
    with pytest.raises(TenantInputError, match="line 2: initial domain must look like"):
        read_csv([HEADER, f"{ROW},contoso.co.uk\n"])


def test_import_plan_keeps_identity_health_and_learnt_initial_domain() -> None:
    """An update changes what the file says and nothing else: the stored key, tenant id,
    token health, and an initial domain learnt from Graph when the file has none."""
    from dataclasses import replace

    from bot.tenants import plan_import
    from core.model import AuthState

    header = "slug,display_name,tenant_id,primary_domain,admin_upn\n"
    (stored,) = read_csv(
        [header, "acme,Acme,3F2504E0-4F89-11D3-9A0C-0305E82C3301,acme.com,a@acme.com"]
    )
    stored = replace(stored, auth_state=AuthState.HEALTHY, initial_domain="acmeltd.onmicrosoft.com")
    (renamed,) = read_csv(
        [header, "acme-eu,Acme EU,3f2504e0-4f89-11d3-9a0c-0305e82c3301,acme.eu,a@acme.com"]
    )
    plan = plan_import([renamed], [stored])
    ((updated, changes),) = plan.updated
    assert (updated.key, updated.tenant_id, updated.auth_state) == (
        stored.key,
        stored.tenant_id,
        AuthState.HEALTHY,
    )
    assert (updated.slug, updated.initial_domain) == ("acme-eu", "acmeltd.onmicrosoft.com")
    assert changes == [
        "slug 'acme' -> 'acme-eu'",
        "display_name 'Acme' -> 'Acme EU'",
        "primary_domain 'acme.com' -> 'acme.eu'",
    ]
    assert plan_import([stored], [stored]).unchanged == [stored]
