"""The email outbox (invitation and reminder emails), chasing steps, and what chasing reads on a
renewal (when its invitation was made, when its link was first opened, how many codes lapsed).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.add_column(sa.Column("invited_at", UTCDateTime))
        batch.add_column(sa.Column("link_opened_at", UTCDateTime))
        batch.add_column(sa.Column("codes_lapsed", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("renewal_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("invitation", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("not_before", UTCDateTime),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("sent_at", UTCDateTime),
        sa.Column("error", sa.String(200)),
    )
    op.create_index("ix_email_outbox_due", "email_outbox", ["state", "not_before"])
    op.create_index("ix_email_outbox_renewal", "email_outbox", ["renewal_id"])
    op.create_table(
        "chase_steps",
        sa.Column("renewal_id", sa.String(32), primary_key=True),
        sa.Column("step", sa.String(64), primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chase_steps")
    op.drop_index("ix_email_outbox_renewal", "email_outbox")
    op.drop_index("ix_email_outbox_due", "email_outbox")
    op.drop_table("email_outbox")
    with op.batch_alter_table("renewals") as batch:
        batch.drop_column("codes_lapsed")
        batch.drop_column("link_opened_at")
        batch.drop_column("invited_at")
