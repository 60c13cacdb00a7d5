"""Resumable renewals: staged tokens, one device flow per invitation, threads claimed first.

- ``staged_tokens``: a sign-in's token cache (encrypted), held apart from the tenant's until every
  check passed; a crash after sign-in resumes from it.
- ``code_owner`` / ``code_claim_until``: the one process currently starting a device flow for the
  invitation (concurrent Start presses issue one code).
- ``awaiting_thread``: the renewal is written before its thread opens (one thread per renewal across
  replicas); a process that died in between leaves this set, and a sweep opens the thread.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        batch.add_column(sa.Column("staged_tokens", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("code_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("code_claim_until", UTCDateTime, nullable=True))
        batch.add_column(
            sa.Column("awaiting_thread", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("renewals") as batch:
        for name in ("awaiting_thread", "code_claim_until", "code_owner", "staged_tokens"):
            batch.drop_column(name)
