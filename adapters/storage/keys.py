"""Key rotation: every stored secret re-encrypted with the first configured key.

What is sealed: token caches, device-flow state, staged sign-ins, a browser sign-in's PKCE
verifier, and the chat and email outboxes (a first post and an invitation email carry the Auth
URL). One transaction: a failure leaves everything as it was.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.tables import email_outbox, outbox, renewals, token_caches

SEALED = (
    (token_caches, token_caches.c.tenant_id, token_caches.c.ciphertext),
    (renewals, renewals.c.id, renewals.c.flow_state),
    (renewals, renewals.c.id, renewals.c.staged_tokens),
    (renewals, renewals.c.id, renewals.c.signin_flow),
    (outbox, outbox.c.id, outbox.c.body),  # text columns: the sealed token as a string
    (email_outbox, email_outbox.c.id, email_outbox.c.body),
)


async def rotate_secrets(engine: AsyncEngine, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the first key (after adding a new key in front).

    Returns:
        How many values were re-encrypted.
    """
    count = 0
    async with engine.begin() as conn:
        for table, key_col, col in SEALED:
            rows = (await conn.execute(select(key_col, col).where(col.is_not(None)))).all()
            for key, sealed in rows:
                again = (
                    box.rotate(sealed.encode()).decode()
                    if isinstance(sealed, str)
                    else box.rotate(sealed)
                )
                await conn.execute(update(table).where(key_col == key).values({col.name: again}))
                count += 1
    return count
