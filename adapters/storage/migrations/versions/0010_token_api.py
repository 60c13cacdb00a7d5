"""The token API: service keys (hashed), single-flight refresh leases, the audit of issued tokens.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("tenants", sa.Text, nullable=False),
        sa.Column("token_sets", sa.Text, nullable=False),
        sa.Column("rate_per_minute", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
    )
    op.create_table(
        "token_refresh_leases",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("token_set", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", UTCDateTime),
    )
    op.create_table(
        "token_issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("tenant_key", sa.String(36), nullable=False),
        sa.Column("token_set", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("refreshed", sa.Boolean, nullable=False),
    )
    op.create_index("ix_token_issues_tenant_at", "token_issues", ["tenant_key", "at"])


def downgrade() -> None:
    op.drop_index("ix_token_issues_tenant_at", "token_issues")
    for table in ("token_issues", "token_refresh_leases", "service_keys"):
        op.drop_table(table)
