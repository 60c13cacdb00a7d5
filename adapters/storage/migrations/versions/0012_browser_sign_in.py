"""A browser sign-in in progress ("Sign in with Microsoft": authorization code with PKCE).

- ``signin_state_hash``: SHA-256 of the ``state`` sent to Microsoft (the return must present it).
- ``signin_expires_at``: after this the return is refused.
- ``signin_flow``: the identity adapter's flow (PKCE verifier, nonce), encrypted like
  ``flow_state``; cleared when the return is handled (single use).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on SQLite too (no table copy in batch mode).
    op.add_column("renewals", sa.Column("signin_state_hash", sa.String(64), nullable=True))
    op.add_column("renewals", sa.Column("signin_expires_at", UTCDateTime, nullable=True))
    op.add_column("renewals", sa.Column("signin_flow", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        for name in ("signin_flow", "signin_expires_at", "signin_state_hash"):
            batch.drop_column(name)
