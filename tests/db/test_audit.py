"""The audit trail and the model registry."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.audit import list_events, record_event
from db.model_versions import current_model_version, list_model_versions, register_model_version
from tests.dbfixtures import create_random_job

Maker = sessionmaker[Session]


def test_events_are_listed_newest_first_per_job(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        record_event(
            session=session, actor="dr-a", action="job.submit", job_id=job.id, detail={"source": "w7"}
        )
        record_event(session=session, actor="admin", action="token.create", detail={"name": "ci"})
        record_event(session=session, actor="dr-a", action="job.cancel", job_id=job.id)
    with db_sessionmaker() as session:
        everything = list_events(session=session)
        assert [e.action for e in everything] == ["job.cancel", "token.create", "job.submit"]
        mine = list_events(session=session, job_id=job.id)
        assert [(e.action, e.detail) for e in mine] == [
            ("job.cancel", None),
            ("job.submit", {"source": "w7"}),
        ]
        older = list_events(session=session, limit=1, before_id=mine[0].id)
        assert [e.action for e in older] == ["token.create"]


def _register(session: Session, version: str, make_current: bool = True, threshold: float = 0.3) -> None:
    register_model_version(
        session=session,
        version=version,
        file=f"models/{version}.keras",
        sha256="f" * 64,
        threshold=threshold,
        metrics={"recall": 0.99},
        card={"version": version},
        make_current=make_current,
    )


def test_registering_a_model_version_upserts_and_moves_the_current_marker(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        assert current_model_version(session=session) is None
        _register(session, "v1")
        _register(session, "v2")
        _register(session, "v3", make_current=False)
    with db_sessionmaker.begin() as session:
        current = current_model_version(session=session)
        assert current is not None and current.version == "v2"
        _register(session, "v1", threshold=0.25)  # re-registering updates the row and makes it current
    with db_sessionmaker() as session:
        versions = list_model_versions(session=session)
        assert [(v.version, v.is_current) for v in versions] == [("v3", False), ("v2", False), ("v1", True)]
        assert versions[-1].threshold == 0.25 and versions[-1].metrics == {"recall": 0.99}
