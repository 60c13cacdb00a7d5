"""Recently seen delivery ids: a platform's retry of the same event is not a second command.

Slack retries a slash command it thinks timed out (same trigger id); Teams redelivers an activity
(same activity id). Both adapters drop what they saw in the last ten minutes.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class SeenTriggers:
    """Trigger ids seen in the last ten minutes: a Slack retry is not a second command."""

    def __init__(self, ttl: float = 600.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, trigger_id: str) -> bool:
        now = time.monotonic()
        while self._seen and (
            len(self._seen) > self.size or next(iter(self._seen.values())) < now - self.ttl
        ):
            self._seen.popitem(last=False)
        if not trigger_id:
            return True
        if trigger_id in self._seen:
            return False
        self._seen[trigger_id] = now
        return True
