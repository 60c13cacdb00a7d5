"""Poll leases: several bot processes share one database; each device flow is polled by one.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.add_column(sa.Column("poll_owner", sa.String(64)))
        batch.add_column(sa.Column("poll_lease_until", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.drop_column("poll_lease_until")
        batch.drop_column("poll_owner")
