"""Job runs: once-a-day work (the health digest) claimed by one replica only.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_run_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
