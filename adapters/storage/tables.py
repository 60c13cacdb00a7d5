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
# FIND_TENANT compares lower(column)): one expression index each, so the lookup is four index
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
    # a browser sign-in in progress: its state (hashed), deadline and flow (encrypted: PKCE
    # verifier and nonce)
    Column("signin_state_hash", String(64)),
    Column("signin_expires_at", UTCDateTime),
    Column("signin_flow", LargeBinary),
    Column("invited_at", UTCDateTime),  # chasing: the current invitation's time
    Column("link_opened_at", UTCDateTime),  # the page's script first asked for the status
    Column("codes_lapsed", Integer, nullable=False, server_default="0"),
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
    Index("ix_msal_errors_tenant_at", "tenant_key", "at", "id"),  # a tenant's newest (0015)
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
    Column("body", Text, nullable=False),  # the message as JSON, encrypted (the Auth URL)
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

# -- the token API (migration 0010) ------------------------------------------------------------

service_keys = Table(
    "service_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("service", String(100), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # SHA-256 of the secret part only
    Column("tenants", Text, nullable=False),  # JSON list of tenant keys; empty: every tenant
    Column("token_sets", Text, nullable=False),  # JSON list of set names; empty: every set
    Column("rate_per_minute", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

token_refresh_leases = Table(  # single flight of a token set's refresh across replicas
    "token_refresh_leases",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("token_set", String(64), primary_key=True),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
)

token_issues = Table(  # the audit of every issued token: never the token itself
    "token_issues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("service", String(100), nullable=False),
    Column("tenant_key", String(36), nullable=False),
    Column("token_set", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("refreshed", Boolean, nullable=False),
    Index("ix_token_issues_tenant_at", "tenant_key", "at"),
)

# -- webhooks (migration 0011) -----------------------------------------------------------------

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(40), primary_key=True),  # the webhook-id header
    Column("kind", String(40), nullable=False),
    Column("tenant_key", String(36)),
    Column("body", Text, nullable=False),  # signed byte for byte as stored
    Column("created_at", UTCDateTime, nullable=False),
    Column("fanned_out", Boolean, nullable=False, server_default=false()),
    Index("ix_webhook_events_fanned", "fanned_out"),
)

webhook_tenants = Table(  # the last event sent per tenant ("starts failing" is a change)
    "webhook_tenants",
    metadata,
    Column("tenant_key", String(36), primary_key=True),
    Column("last_kind", String(40), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("webhook_events.id"), nullable=False),
    Column("endpoint", String(500), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(64)),  # lease: which process is sending it
    Column("lease_until", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", String(200)),
    Index("uq_webhook_deliveries_event_endpoint", "event_id", "endpoint", unique=True),
    Index("ix_webhook_deliveries_due", "delivered_at", "next_attempt_at"),
)

# Emails to customers (the invitation, its reminder), sent once each by one process (a lease per
# row). The body holds the Auth URL: encrypted, and wiped once sent or dropped.
email_outbox = Table(
    "email_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("renewal_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # invitation | reminder
    Column("invitation", String(16), nullable=False),  # Renewal.invitation_ref
    Column("recipient", String(254), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("body", Text),  # the email, encrypted; NULL once sent or dropped
    Column("state", String(10), nullable=False),  # pending | sent | failed | dropped
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("not_before", UTCDateTime),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("error", String(200)),
    Index("ix_email_outbox_due", "state", "not_before"),
    Index("ix_email_outbox_renewal", "renewal_id"),
)

# Chasing steps taken (core.chasing): one row per renewal and step of an invitation, made once.
chase_steps = Table(
    "chase_steps",
    metadata,
    Column("renewal_id", String(32), primary_key=True),
    Column("step", String(64), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)
