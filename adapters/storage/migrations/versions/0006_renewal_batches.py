"""Renewal batches: `renew all-expired` starts many renewals that share one summary thread.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(32), nullable=True))
        batch.create_index("ix_renewals_batch", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.drop_index("ix_renewals_batch")
        batch.drop_column("batch_id")
