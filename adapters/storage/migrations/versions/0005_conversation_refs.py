"""Conversation references: where a Teams (or other push-only) chat can be written to later.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_refs",
        sa.Column("conversation", sa.String(400), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(400), nullable=True),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_conversation_refs_channel", "conversation_refs", ["channel"])


def downgrade() -> None:
    op.drop_index("ix_conversation_refs_channel", "conversation_refs")
    op.drop_table("conversation_refs")
