"""Index msal_errors by (tenant_key, at, id): a tenant's newest identity errors without a scan.

`status` asks for the newest error of each tenant it lists as expired (is it "tokens
unreadable"?), and `errors <tenant>` for a tenant's newest; with only the index on ``at``, each
read every error ever recorded (the monitor records one per failed check, so the table only
grows: 2,500 expired tenants checked daily add 900,000 rows a year).

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_msal_errors_tenant_at", "msal_errors", ["tenant_key", "at", "id"])


def downgrade() -> None:
    op.drop_index("ix_msal_errors_tenant_at", table_name="msal_errors")
