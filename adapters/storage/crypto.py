"""Encryption at rest for token caches and device-flow state (Fernet, MultiFernet for rotation).

The first key encrypts; every key decrypts, so keys can be rotated without downtime.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.errors import StorageError


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except (ValueError, TypeError):
            # never echo the key itself: it is a secret
            raise ValueError("an encryption key is not a valid Fernet key") from None

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise StorageError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt with the first key."""
        return self._fernet.rotate(token)


def generate_key() -> str:
    return Fernet.generate_key().decode()
