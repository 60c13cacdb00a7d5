"""Webhooks: stored events, the last event per tenant, and one delivery per event and receiver.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("tenant_key", sa.String(36)),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("fanned_out", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_webhook_events_fanned", "webhook_events", ["fanned_out"])
    op.create_table(
        "webhook_tenants",
        sa.Column("tenant_key", sa.String(36), primary_key=True),
        sa.Column("last_kind", sa.String(40), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("delivered_at", UTCDateTime),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(200)),
    )
    op.create_index(
        "uq_webhook_deliveries_event_endpoint",
        "webhook_deliveries",
        ["event_id", "endpoint"],
        unique=True,
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["delivered_at", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_tenants")
    op.drop_index("ix_webhook_events_fanned", "webhook_events")
    op.drop_table("webhook_events")
