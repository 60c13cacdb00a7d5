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
