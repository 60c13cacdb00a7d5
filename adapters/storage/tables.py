"""The database schema as SQLAlchemy Core tables. Alembic migrations create the same schema.

One active renewal per tenant is a partial unique index, not a check in code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    func,
    text,
)

ACTIVE_STATES_SQL = "state IN ('requested', 'invited', 'code_issued', 'tokens_acquired')"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which stores naive) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("key", String(36), primary_key=True),
    Column("slug", String(120), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("tenant_id", String(64), nullable=False, unique=True),
    Column("primary_domain", String(253), nullable=False),
    Column("admin_upn", String(254), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_validated_at", UTCDateTime),
    Column("auth_state", String(16), nullable=False, server_default="unknown"),
    Column("last_refresh_at", UTCDateTime),
    Column("snoozed_until", UTCDateTime),
    Column("next_check_at", UTCDateTime),  # the monitor's schedule
    Column("check_owner", String(64)),  # lease: which process checks the tenant
    Column("check_lease_until", UTCDateTime),
    Column("initial_domain", String(253), nullable=False, server_default=""),
    Index("ix_tenants_next_check", "next_check_at"),
    Index("ix_tenants_auth_state", "auth_state"),
)
# `/renew-token <ref>` finds a tenant by any of these, case-insensitively (repository's
# _FIND_TENANT compares lower(column)): one expression index each, so the lookup is four index
# probes instead of a scan of every tenant (migration 0014). The expressions must stay exactly
# lower(<column>) for SQLite and PostgreSQL to match them against the query.
TENANT_LOOKUP = ("slug", "display_name", "primary_domain", "tenant_id")
for _column in TENANT_LOOKUP:
    Index(f"ix_tenants_lower_{_column}", func.lower(tenants.c[_column]))

renewals = Table(
    "renewals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_key", String(36), ForeignKey("tenants.key"), nullable=False),
    Column("state", String(20), nullable=False),
    Column("requested_by_platform", String(20), nullable=False),
    Column("requested_by_id", String(120), nullable=False),
    Column("requested_by_name", String(200), nullable=False),
    Column("invitation_email", String(254), nullable=False),
    Column("expected_account", String(254), nullable=False),
    Column("origin_platform", String(20), nullable=False),
    Column("origin_channel", String(400), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime),
    Column("invitation_hash", String(64), unique=True),
    Column("invitation_expires_at", UTCDateTime),
    Column("user_code", String(32)),
    Column("verification_uri", String(500)),
    Column("code_expires_at", UTCDateTime),
    Column("poll_interval", Integer),
    Column("flow_state", LargeBinary),  # encrypted: holds the device code
    Column("code_issued_at", UTCDateTime),
    Column("tokens_acquired", Integer, nullable=False),
    Column("tokens_total", Integer, nullable=False),
    Column("signed_in_account", String(254)),
    Column("signed_in_is_global_admin", Boolean),
    Column("failure_code", String(64)),
    Column("warnings", Text, nullable=False),
    Column("thread_platform", String(20)),
    Column("thread_key", Text),
    Column("version", Integer, nullable=False),
    Column("poll_owner", String(64)),  # lease: which process polls the device flow
    Column("poll_lease_until", UTCDateTime),
    Column("batch_id", String(32)),  # renewals started together by `renew all-expired`
    Column("staged_tokens", LargeBinary),  # encrypted: a sign-in's tokens until validated
    Column("code_owner", String(64)),  # lease: which process is starting a device flow
    Column("code_claim_until", UTCDateTime),
    Column("awaiting_thread", Boolean, nullable=False, server_default=false()),
    Index("ix_renewals_batch", "batch_id"),
    Index(
        "uq_renewals_one_active_per_tenant",
        "tenant_key",
        unique=True,
        sqlite_where=text(ACTIVE_STATES_SQL),
        postgresql_where=text(ACTIVE_STATES_SQL),
    ),
)

token_caches = Table(
    "token_caches",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_run_at", UTCDateTime, nullable=False),
)

conversation_refs = Table(
    "conversation_refs",
    metadata,
    Column("conversation", String(400), primary_key=True),
    Column("platform", String(16), nullable=False),
    Column("channel", String(400), nullable=True),
    Column("reference", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_conversation_refs_channel", "channel"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("renewal_id", String(32)),
    Column("tenant_key", String(36)),
    Column("detail", Text, nullable=False),
    Index("ix_audit_tenant_at", "tenant_key", "at"),
)

msal_errors = Table(
    "msal_errors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("tenant_key", String(36)),
    Column("code", String(64), nullable=False),
    Column("error", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("client_ref", String(100)),  # the reporter's own id: intake is idempotent on it
    Index("ix_msal_errors_at", "at"),
    Index("uq_msal_errors_client_ref", "source", "client_ref", unique=True),
)

# The durable outbox: chat messages waiting to be delivered, oldest first per conversation.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation", String(500), nullable=False),  # the unit of order
    Column("kind", String(16), nullable=False),  # post | status | announce
    Column("platform", String(20), nullable=False),
    Column("thread_key", Text),
    Column("body", Text, nullable=False),  # the message as JSON (no secrets: what chat shows)
    Column("state", String(10), nullable=False),  # pending | failed
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("failed_at", UTCDateTime),
    Column("error", String(200)),
    Index("ix_outbox_pending", "state", "conversation", "id"),
)

# Which process delivers a conversation (a lease), and when it may send again after a 429.
outbox_leases = Table(
    "outbox_leases",
    metadata,
    Column("conversation", String(500), primary_key=True),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("not_before", UTCDateTime),
    Column("error", String(200)),
)
