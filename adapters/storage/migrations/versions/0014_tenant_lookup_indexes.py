"""Expression indexes on lower(slug), lower(display_name), lower(primary_domain), lower(tenant_id).

`/renew-token <ref>` resolves a tenant by any of the four, case-insensitively; without these the
lookup read every tenant (30,000 tenants: a full scan per command). SQLite (3.9+) and PostgreSQL
both use an expression index when the query's expression is the same, `lower(<column>)`.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = ("slug", "display_name", "primary_domain", "tenant_id")


def upgrade() -> None:
    for column in COLUMNS:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS ix_tenants_lower_{column} ON tenants (lower({column}))"
        )


def downgrade() -> None:
    for column in COLUMNS:
        op.execute(f"DROP INDEX IF EXISTS ix_tenants_lower_{column}")
