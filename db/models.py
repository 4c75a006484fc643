"""The schema: jobs, their batches and per-image results, model versions, API tokens, users, audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "planning", "running", "succeeded", "failed", "cancelled")
ACTIVE_JOB_STATUSES = ("queued", "planning", "running")
BATCH_STATUSES = ("queued", "running", "done", "failed", "cancelled")
PENDING_BATCH_STATUSES = ("queued", "running")
RESULT_STATUSES = ("pending", "scored", "error")

# Partial-index predicates, written once and used verbatim by the queries: SQLite only uses a
# partial index when the query repeats the index's WHERE term literally (no bound parameters).
FLAGGED = "flagged = true"
ERRORS = "status = 'error'"
FALSE_NEGATIVES = "label = 1 AND flagged = false"

# SQLite only auto-increments an INTEGER PRIMARY KEY, so 64-bit ids are INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every timestamp in the database is one of these)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: brainscan stores timezone-aware UTC timestamps only")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


SOURCE_KINDS = ("folder", "upload", "dicomweb")  # an archive-root folder, an upload, a DICOMweb retrieve


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        _one_of("status", JOB_STATUSES),
        _one_of("source_kind", SOURCE_KINDS),
        Index("ix_jobs_status_id", "status", "id"),
        # a key is the submitter's own: another caller's key neither finds nor blocks this one's job
        UniqueConstraint("submitted_by", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))  # as submitted: archive-root folder or upload name
    source_kind: Mapped[str] = mapped_column(String(16))
    source_path: Mapped[str] = mapped_column(String(4096))  # absolute path the worker reads
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(default=0, server_default="0")  # images planned
    skipped: Mapped[int] = mapped_column(default=0, server_default="0")  # non-image files seen
    skipped_reasons: Mapped[dict[str, Any] | None]  # why they were skipped: {reason: count}
    model_version: Mapped[str] = mapped_column(String(128))
    threshold: Mapped[float] = mapped_column(Float)
    # submitted without a threshold: each DICOM series takes its site's active profile, if any
    site_profiles: Mapped[bool] = mapped_column(default=False, server_default=false())
    priority: Mapped[str] = mapped_column(String(8), default="routine", server_default="routine")  # or stat
    return_to: Mapped[str | None] = mapped_column(
        String(255)
    )  # where its study results go: names, comma-separated
    pull: Mapped[dict[str, Any] | None]  # a DICOMweb job's {"url", "studies": [UIDs]} (worker/pull.py)
    batch_size: Mapped[int]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of what was asked, keyed jobs only
    submitted_by: Mapped[str] = mapped_column(String(255))  # the owner: "user:alice" or "token:name#3"
    team: Mapped[str | None] = mapped_column(String(64))  # the owner's team when submitted: they share it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    planned_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]  # the planner's last sign of life while planning
    started_at: Mapped[datetime | None]  # first batch of this run claimed (a re-run starts it again)
    finished_at: Mapped[datetime | None]
    rerun_at: Mapped[datetime | None]  # the last re-run of failed images was asked for then
    error: Mapped[str | None] = mapped_column(Text)
    tp: Mapped[int | None]
    fp: Mapped[int | None]
    tn: Mapped[int | None]
    fn: Mapped[int | None]
    recall: Mapped[float | None] = mapped_column(Float)
    specificity: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        _one_of("status", BATCH_STATUSES),
        UniqueConstraint("job_id", "index"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    size: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(255))  # host:pid of the last claimer
    lease_until: Mapped[datetime | None]  # the claim holds until then unless its worker renews it
    requeued_because: Mapped[str | None] = mapped_column(String(255))  # the last time it was sent again
    enqueued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    seconds: Mapped[float | None] = mapped_column(Float)
    scored: Mapped[int] = mapped_column(default=0, server_default="0")
    failed: Mapped[int] = mapped_column(default=0, server_default="0")
    out_of_distribution: Mapped[
        int | None
    ]  # scored images beyond the model's OOD threshold; null: no reference
    flagged: Mapped[int] = mapped_column(default=0, server_default="0")
    tp: Mapped[int | None]
    fp: Mapped[int | None]
    tn: Mapped[int | None]
    fn: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    score_histogram: Mapped[list[int] | None] = mapped_column(JSON)  # scores per tenth of [0, 1]


class Series(Base):
    """One series of a job's images: a DICOM series, or a folder of other images (its own study).

    Keys, never names: a study and series are their UIDs (a folder its path), a patient a keyed
    hash of PatientID (`training.dicom_header.patient_key`)."""

    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint("job_id", "series_key"),
        Index("ix_series_job_id_study_key", "job_id", "study_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    study_key: Mapped[str] = mapped_column(String(1024))  # StudyInstanceUID, or the folder's path
    series_key: Mapped[str] = mapped_column(String(1024))  # SeriesInstanceUID, or the folder's path
    dicom: Mapped[bool]  # False: a folder of other images
    patient_key: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(255), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    sequence: Mapped[str] = mapped_column(String(255), default="")
    plane: Mapped[str] = mapped_column(String(16), default="")
    site: Mapped[str] = mapped_column(String(255), default="")
    image_type: Mapped[str] = mapped_column(String(255), default="")
    threshold: Mapped[float | None] = mapped_column(Float)  # its site's profile's; None: the job's
    site_profile_id: Mapped[int | None]  # the profile version it took
    not_assessed: Mapped[str | None] = mapped_column(String(255))  # why the model is not fit for it


class ImageResult(Base):
    __tablename__ = "image_results"
    __table_args__ = (
        _one_of("status", RESULT_STATUSES),
        UniqueConstraint("job_id", "relpath", "frame"),
        Index("ix_image_results_batch_id", "batch_id"),
        Index("ix_image_results_series_id", "series_id"),
        Index("ix_image_results_job_id_id", "job_id", "id"),
        Index(
            "ix_image_results_flagged",
            "job_id",
            "id",
            sqlite_where=text(FLAGGED),
            postgresql_where=text(FLAGGED),
        ),
        Index(
            "ix_image_results_errors",
            "job_id",
            "id",
            sqlite_where=text(ERRORS),
            postgresql_where=text(ERRORS),
        ),
        Index(
            "ix_image_results_false_negatives",
            "job_id",
            "id",
            sqlite_where=text(FALSE_NEGATIVES),
            postgresql_where=text(FALSE_NEGATIVES),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    relpath: Mapped[str] = mapped_column(String(1024))
    frame: Mapped[int] = mapped_column(default=0, server_default="0")  # 1.. in a multi-frame file
    series_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("series.id", ondelete="CASCADE"))
    instance_number: Mapped[int | None]  # DICOM InstanceNumber: the slice's place in its series
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    content_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 hex of the bytes scored
    label: Mapped[int | None] = mapped_column(SmallInteger)  # 1 tumour, 0 none, None unknown
    probability: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool | None]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    # the bytes are not a usable slice (corrupt, not an image, too small...): a re-run would fail
    # the same way, so it does not retry them; false for errors that may pass later (I/O, missing)
    error_permanent: Mapped[bool] = mapped_column(default=False, server_default=false())
    scored_at: Mapped[datetime | None]
    # how unlike the training images (training.ood) and whether beyond the model's threshold, where
    # an unflagged image is `not assessed`; null when the model has no out-of-distribution reference
    ood_distance: Mapped[float | None] = mapped_column(Float)
    out_of_distribution: Mapped[bool | None]


REVIEW_VERDICTS = ("tumour", "no tumour", "unsure")


class Review(Base):
    """A radiologist's verdict on one image of a job: the latest one stands (earlier ones are in
    the audit log)."""

    __tablename__ = "reviews"
    __table_args__ = (_one_of("verdict", REVIEW_VERDICTS), Index("ix_reviews_job_id", "job_id"))

    result_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("image_results.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(255))  # "user:alice" or "token:name#3"
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SiteProfile(Base):
    """A site's own threshold for one model version, set from its reviewed images. Versioned: a
    change adds a row and retires the one before; clearing retires it (the model's threshold
    applies again). Jobs of the site submitted without a threshold of their own take it."""

    __tablename__ = "site_profiles"
    __table_args__ = (Index("ix_site_profiles_site_model_version", "site", "model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(128))
    threshold: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]
    evidence: Mapped[dict[str, Any] | None]  # what the suggestion rested on: reviewed counts, target


class ReceivedStudy(Base):
    """A study received over DICOM: the instances of its open delivery (received since its last
    job), and when the last one came. When no instance has come for the stable time, the delivery
    becomes a job and the next instance opens delivery + 1 (a follow-up job for it alone)."""

    __tablename__ = "received_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    delivery: Mapped[int] = mapped_column(default=1)  # the open one: received/<study>/<delivery>/
    open_instances: Mapped[int] = mapped_column(default=0)
    instances: Mapped[int] = mapped_column(default=0)  # every delivery's, duplicates not counted
    duplicates: Mapped[int] = mapped_column(default=0)  # instances sent again, ignored
    calling_ae: Mapped[str] = mapped_column(String(16))  # the last sender's AE title
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))


class Outbox:
    """Something to send out, written in the transaction that made it due, and its delivery:
    when to try next, how often it was tried, and how it went (db/outbox.py)."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(255))


class Notification(Outbox, Base):
    """A job's end (job.succeeded, job.failed, job.cancelled), written with it, to send to the
    webhook (worker/notify.py): when to try next, how often it was tried, and how it went."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))


class ResultDelivery(Outbox, Base):
    """A study's result (a DICOM SR, and a Key Object Selection of its flagged slices) to send to
    one configured destination (worker/pacs.py), written when its job succeeded."""

    __tablename__ = "result_deliveries"
    __table_args__ = (UniqueConstraint("job_id", "study_uid", "destination"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    study_uid: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(64))  # a name in BRAINSCAN_DICOM_DESTINATIONS
    verdict: Mapped[str | None] = mapped_column(String(16))  # what the last delivery said
    objects: Mapped[int] = mapped_column(default=0)  # instances it sent: the SR, and the KOS if any


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        # at most one current version
        Index(
            "uq_model_versions_current",
            "is_current",
            unique=True,
            sqlite_where=text("is_current = true"),
            postgresql_where=text("is_current = true"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    file: Mapped[str] = mapped_column(String(4096))
    sha256: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    card: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_current: Mapped[bool] = mapped_column(default=False)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(8), index=True)  # shown in listings, narrows the lookup
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole token
    scopes: Mapped[str] = mapped_column(String(64))  # comma-separated: read, submit, all-jobs, admin
    team: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]  # None only for tokens made before expiry existed
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(64), default="read,submit", server_default="read,submit")
    team: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)
    # in every session cookie; bumped by logout, password change and disabling, which ends them all
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_job_id_id", "job_id", "id"),
        Index("ix_audit_events_actor_action_at", "actor", "action", "at"),
        # sign-in throttling counts one client address's recent failures on every login attempt
        Index("ix_audit_events_client_action_at", "client", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64))  # the client's address, for web requests
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any] | None]
