"""Recently seen delivery ids: a platform's retry of the same event is not a second command.

Slack retries a slash command it thinks timed out (same trigger id); Teams redelivers an activity
(same activity id). Both adapters drop what they saw in the last ten minutes.
"""

from __future__ import annotations

import time

from core.lru import BoundedCache


class SeenTriggers:
    """Trigger ids seen in the last ten minutes: a Slack retry is not a second command."""

    def __init__(self, ttl: float = 600.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self._seen: BoundedCache[str, float] = BoundedCache(size)

    def first_time(self, trigger_id: str) -> bool:
        now = time.monotonic()
        while (oldest := self._seen.oldest()) is not None and oldest[1] < now - self.ttl:
            self._seen.drop_oldest()
        if not trigger_id:
            return True
        if trigger_id in self._seen:
            return False
        self._seen.put(trigger_id, now)
        return True
