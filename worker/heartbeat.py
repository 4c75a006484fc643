"""A thread that shows SQL a worker is alive while it works: it renews a batch's lease while the
batch is scored, and the planner's heartbeat while a job is planned. The watchdog takes back only
work whose heartbeat stopped (the process was killed, froze, or lost the database)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Calls `beat(session)` every `period` seconds in its own transaction until stopped, or until
    it returns False (the work is no longer this process's). A database blip costs one beat."""

    def __init__(
        self, sessions: sessionmaker[Session], beat: Callable[[Session], bool], *, period: float, what: str
    ) -> None:
        super().__init__(name=f"heartbeat {what}", daemon=True)
        self.sessions, self.beat, self.period, self.what = sessions, beat, period, what
        self.stopped = threading.Event()
        self.lost = threading.Event()  # set when a beat found the work no longer ours

    def held(self) -> bool:
        """False once a beat found the work taken back (its holder may stop at once)."""
        return not self.lost.is_set()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                with self.sessions.begin() as session:
                    held = self.beat(session)
            except Exception as exc:
                log.warning("%s: heartbeat failed (%s); trying again", self.what, exc)
                continue
            if not held:
                log.warning("%s: no longer ours", self.what)
                self.lost.set()
                return

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()
