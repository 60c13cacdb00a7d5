"""Initial schema: tenants, renewals (one active per tenant), token caches, audit, msal errors.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import ACTIVE_STATES_SQL, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("key", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(120), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False, unique=True),
        sa.Column("primary_domain", sa.String(253), nullable=False),
        sa.Column("admin_upn", sa.String(254), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_validated_at", UTCDateTime),
    )
    op.create_table(
        "renewals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_key", sa.String(36), sa.ForeignKey("tenants.key"), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("requested_by_platform", sa.String(20), nullable=False),
        sa.Column("requested_by_id", sa.String(120), nullable=False),
        sa.Column("requested_by_name", sa.String(200), nullable=False),
        sa.Column("invitation_email", sa.String(254), nullable=False),
        sa.Column("expected_account", sa.String(254), nullable=False),
        sa.Column("origin_platform", sa.String(20), nullable=False),
        sa.Column("origin_channel", sa.String(400), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime),
        sa.Column("invitation_hash", sa.String(64), unique=True),
        sa.Column("invitation_expires_at", UTCDateTime),
        sa.Column("user_code", sa.String(32)),
        sa.Column("verification_uri", sa.String(500)),
        sa.Column("code_expires_at", UTCDateTime),
        sa.Column("poll_interval", sa.Integer),
        sa.Column("flow_state", sa.LargeBinary),
        sa.Column("code_issued_at", UTCDateTime),
        sa.Column("tokens_acquired", sa.Integer, nullable=False),
        sa.Column("tokens_total", sa.Integer, nullable=False),
        sa.Column("signed_in_account", sa.String(254)),
        sa.Column("signed_in_is_global_admin", sa.Boolean),
        sa.Column("failure_code", sa.String(64)),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("thread_platform", sa.String(20)),
        sa.Column("thread_key", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index(
        "uq_renewals_one_active_per_tenant",
        "renewals",
        ["tenant_key"],
        unique=True,
        sqlite_where=sa.text(ACTIVE_STATES_SQL),
        postgresql_where=sa.text(ACTIVE_STATES_SQL),
    )
    op.create_table(
        "token_caches",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("renewal_id", sa.String(32)),
        sa.Column("tenant_key", sa.String(36)),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_tenant_at", "audit_events", ["tenant_key", "at"])
    op.create_table(
        "msal_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("tenant_key", sa.String(36)),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("error", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
    )
    op.create_index("ix_msal_errors_at", "msal_errors", ["at"])


def downgrade() -> None:
    for name in ("msal_errors", "audit_events", "token_caches", "renewals", "tenants"):
        op.drop_table(name)
