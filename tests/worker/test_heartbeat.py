"""The heartbeat thread: beats while work goes on, survives a failed beat, stops when the work is
no longer its own, and stops at once when the work ends."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from worker.heartbeat import Heartbeat


def test_a_heartbeat_beats_survives_a_failure_and_stops_when_the_work_is_taken(
    db_sessionmaker: sessionmaker[Session],
) -> None:
    beats: list[float] = []

    def beat(session: Session) -> bool:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("database blip")
        return len(beats) < 4  # the fourth beat finds the work taken by another worker

    with Heartbeat(db_sessionmaker, beat, period=0.05, what="test") as heartbeat:
        heartbeat.join(timeout=5)
        assert not heartbeat.is_alive()
    assert len(beats) == 4


def test_a_heartbeat_stops_with_its_work(db_sessionmaker: sessionmaker[Session]) -> None:
    started = time.monotonic()
    with Heartbeat(db_sessionmaker, lambda session: True, period=30, what="test") as heartbeat:
        pass
    assert not heartbeat.is_alive() and time.monotonic() - started < 1
