"""A batch's image rows in one statement: arrays through unnest() on PostgreSQL, executemany on SQLite.

On PostgreSQL one ``INSERT ... SELECT FROM unnest(arrays)`` per batch is parsed, planned and
executed once instead of once per row, which about doubles the rows per second of planning and
scoring (bench/db_bench.py). SQLite runs in-process, where executemany is already that fast.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    Select,
    SmallInteger,
    Table,
    Text,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from db.models import ImageResult

RESULTS = cast(Table, ImageResult.__table__)
PLANNED: dict[str, TypeEngine[Any]] = {
    "relpath": Text(),
    "frame": Integer(),
    "size_bytes": BigInteger(),
    "label": SmallInteger(),
    "series_id": BigInteger(),
    "instance_number": Integer(),
}
SCORED: dict[str, TypeEngine[Any]] = {
    "relpath": Text(),
    "frame": Integer(),
    "content_hash": Text(),
    "probability": Float(),
    "flagged": Boolean(),
    "error": Text(),
    "error_permanent": Boolean(),
    "ood_distance": Float(),
    "out_of_distribution": Boolean(),
}
UPSERTED = (*tuple(SCORED)[2:], "status", "scored_at")  # what a later result may overwrite
KEY = [RESULTS.c.job_id, RESULTS.c.relpath, RESULTS.c.frame]  # one row per frame of a file


def _arrays_as_rows(columns: dict[str, TypeEngine[Any]]) -> TableValuedAlias:
    arrays = (sql_cast(bindparam(name), postgresql.ARRAY(type_)) for name, type_ in columns.items())
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="rows")


def _from_arrays(rows: TableValuedAlias, *computed: Any) -> Select[Any]:
    job_and_batch = (bindparam("job_id", type_=Integer()), bindparam("batch_id", type_=Integer()))
    return select(*job_and_batch, *rows.c, *computed).select_from(rows)


_planned, _scored = _arrays_as_rows(PLANNED), _arrays_as_rows(SCORED)
_PG_INSERT = insert(RESULTS).from_select(
    ["job_id", "batch_id", *PLANNED, "status"], _from_arrays(_planned, literal_column("'pending'"))
)
# status and scored_at follow from error (None exactly when scored): two arrays fewer to send
_ok = _scored.c.error.is_(None)
_pg_upsert = postgresql.insert(RESULTS).from_select(
    ["job_id", "batch_id", *SCORED, "size_bytes", "status", "scored_at"],
    _from_arrays(
        _scored,
        literal_column("0"),
        case((_ok, literal_column("'scored'")), else_=literal_column("'error'")),
        case((_ok, bindparam("now", type_=DateTime(timezone=True)))),
    ),
)
_PG_UPSERT = _pg_upsert.on_conflict_do_update(
    index_elements=KEY,
    set_={name: _pg_upsert.excluded[name] for name in UPSERTED},
    where=RESULTS.c.status != "scored",
)
_sqlite_upsert = sqlite.insert(RESULTS)
_SQLITE_UPSERT = _sqlite_upsert.on_conflict_do_update(
    index_elements=KEY,
    set_={name: _sqlite_upsert.excluded[name] for name in UPSERTED},
    where=RESULTS.c.status != "scored",
)


def _arrays(job_id: int, batch_id: int, rows: list[dict[str, Any]], names: Any) -> dict[str, Any]:
    return {"job_id": job_id, "batch_id": batch_id, **{name: [row[name] for row in rows] for name in names}}


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_pending(session: Session, *, job_id: int, batch_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert pending image rows; each row has the keys of PLANNED."""
    if _on_postgresql(session):
        session.execute(_PG_INSERT, _arrays(job_id, batch_id, rows, PLANNED))
    else:
        session.execute(
            insert(RESULTS),
            [{"job_id": job_id, "batch_id": batch_id, "status": "pending", **row} for row in rows],
        )


def upsert_scored(session: Session, *, job_id: int, batch_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert or update image rows keyed on (job, relpath, frame), leaving rows already scored alone.

    Each row has the keys of SCORED plus status and scored_at, which are 'scored' and one shared
    time exactly when error is None; no (relpath, frame) may appear twice (ON CONFLICT cannot
    update a row twice in one statement).
    """
    if _on_postgresql(session):
        now = next((row["scored_at"] for row in rows if row["scored_at"] is not None), None)
        session.execute(_PG_UPSERT, {**_arrays(job_id, batch_id, rows, SCORED), "now": now})
    else:
        session.execute(
            _SQLITE_UPSERT, [{"job_id": job_id, "batch_id": batch_id, "size_bytes": 0, **row} for row in rows]
        )
