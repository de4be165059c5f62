"""What this process has heard on the control exchange: the jobs cancelled, and since when it
has been listening (so a job created after that needs no look at its cancel marker)."""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime

REMEMBERED = 10_000
"""Cancelled job ids kept (oldest forgotten first)."""
CLOCK_MARGIN_S = 5.0
"""Clock skew allowed between the host that created a job and this one."""


class CancelRegistry:
    """Cancel requests heard by this process's listener (shared/jobs/cancel.py `listen`)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._since: float | None = None

    def listening(self) -> None:
        """The listener's queue is bound (again): every cancel from now on reaches us."""
        self._since = time.time()

    def deaf(self) -> None:
        """The listener's channel is gone: cancels may be missed until `listening` again."""
        self._since = None

    def add(self, job_id: str) -> None:
        self._ids[job_id] = None
        self._ids.move_to_end(job_id)
        while len(self._ids) > REMEMBERED:
            self._ids.popitem(last=False)

    def heard(self, job_id: str) -> bool:
        return job_id in self._ids

    def covers(self, created_at: datetime) -> bool:
        """True when any cancel of a job created at `created_at` would have reached us."""
        return self._since is not None and created_at.timestamp() - CLOCK_MARGIN_S >= self._since
