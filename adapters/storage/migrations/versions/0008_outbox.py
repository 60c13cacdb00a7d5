"""The durable outbox: chat messages stored until delivered, and per-conversation leases.

Revision ID: 0008
Revises: 0007 (chained to 0006 on the outbox branch; the lead renumbers it to follow 0007)
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("thread_key", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("failed_at", UTCDateTime),
        sa.Column("error", sa.String(200)),
    )
    op.create_index("ix_outbox_pending", "outbox", ["state", "conversation", "id"])
    op.create_table(
        "outbox_leases",
        sa.Column("conversation", sa.String(500), primary_key=True),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("not_before", UTCDateTime),
        sa.Column("error", sa.String(200)),
    )


def downgrade() -> None:
    op.drop_table("outbox_leases")
    op.drop_index("ix_outbox_pending", "outbox")
    op.drop_table("outbox")
