"""Tenant health (monitor state, schedule, leases, snooze) and idempotent MSAL error intake.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("auth_state", sa.String(16), nullable=False, server_default="unknown")
        )
        batch.add_column(sa.Column("last_refresh_at", UTCDateTime))
        batch.add_column(sa.Column("snoozed_until", UTCDateTime))
        batch.add_column(sa.Column("next_check_at", UTCDateTime))
        batch.add_column(sa.Column("check_owner", sa.String(64)))
        batch.add_column(sa.Column("check_lease_until", UTCDateTime))
    op.create_index("ix_tenants_next_check", "tenants", ["next_check_at"])
    op.create_index("ix_tenants_auth_state", "tenants", ["auth_state"])
    with op.batch_alter_table("msal_errors") as batch:
        batch.add_column(sa.Column("client_ref", sa.String(100)))
    op.create_index(
        "uq_msal_errors_client_ref", "msal_errors", ["source", "client_ref"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_msal_errors_client_ref", "msal_errors")
    with op.batch_alter_table("msal_errors") as batch:
        batch.drop_column("client_ref")
    op.drop_index("ix_tenants_auth_state", "tenants")
    op.drop_index("ix_tenants_next_check", "tenants")
    with op.batch_alter_table("tenants") as batch:
        for name in (
            "check_lease_until",
            "check_owner",
            "next_check_at",
            "snoozed_until",
            "last_refresh_at",
            "auth_state",
        ):
            batch.drop_column(name)
