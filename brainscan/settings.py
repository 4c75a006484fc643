"""One settings object, read from BRAINSCAN_* environment variables, for every process."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, fields, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "models" / "brainscan.keras"
MIN_SECRET_LENGTH = 32  # characters of a configured session key; `openssl rand -hex 32` gives 64
PREFIX = "BRAINSCAN_"  # of every setting's environment variable


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe for the chosen environment."""


@dataclass(frozen=True)
class Destination:
    """Where a study's results (DICOM SR and Key Object Selection) are sent: a DICOM node by
    C-STORE (`name=dicom://AE_TITLE@host:port`) or a DICOMweb service by STOW-RS
    (`name=https://host/dicom-web`)."""

    name: str
    url: str  # as configured
    ae_title: str = ""  # C-STORE only
    host: str = ""
    port: int = 0

    @property
    def dicomweb(self) -> bool:
        return not self.url.startswith("dicom://")

    @classmethod
    def parse(cls, entry: str) -> Destination:
        name, sep, url = (part.strip() for part in entry.partition("="))
        usage = "name=dicom://AE_TITLE@host:port or name=https://host/dicom-web"
        if (
            not sep
            or not name
            or not url
            or len(name) > 64
            or not name.replace("-", "").replace("_", "").isalnum()
        ):
            raise SettingsError(f"BRAINSCAN_DICOM_DESTINATIONS: {entry!r} is not {usage}")
        if url.startswith(("http://", "https://")):
            return cls(name, url.rstrip("/"))
        ae_title, at, address = url.removeprefix("dicom://").partition("@")
        host, colon, port = address.rpartition(":")
        if not url.startswith("dicom://") or not at or not colon or not port.isdigit() or not host:
            raise SettingsError(f"BRAINSCAN_DICOM_DESTINATIONS: {entry!r} is not {usage}")
        if not 1 <= len(ae_title) <= 16 or not 0 < int(port) <= 65535:
            raise SettingsError(
                f"BRAINSCAN_DICOM_DESTINATIONS: {entry!r}: an AE title of 1-16 characters and a port"
            )
        return cls(name, url, ae_title=ae_title, host=host.strip("[]"), port=int(port))


@dataclass(frozen=True)
class Settings:
    """Everything a brainscan process needs to know about where things are and how big."""

    env: str = "development"  # development | production; production refuses unsafe defaults
    data_dir: Path = Path("brainscan-data")  # embedded database, broker folder, uploads
    database_url: str = ""  # empty: SQLite file in data_dir
    broker_url: str = ""  # empty: kombu filesystem transport under data_dir/broker
    archive_root: Path | None = None  # None: data_dir/archive
    model_path: Path = DEFAULT_MODEL
    threshold: float | None = None  # None: the model card's tuned threshold
    batch_size: int = 256  # images per score_batch task
    decode_threads: int = 2  # decode/preprocess threads per worker process
    worker_concurrency: int = 0  # 0: one process per CPU core (or per GPU with worker_gpus)
    worker_gpus: int = 0  # >0: one pool process per GPU, each pinned to its own device
    model_threads: int = 0  # TensorFlow threads per process; 0: cores / processes
    batch_soft_time_limit: int = 600  # seconds; a 256-image batch takes ~2 s on 2 cores
    batch_time_limit: int = 660
    visibility_timeout: int = 3600  # Redis re-delivers unacked messages after this
    watchdog_interval: int = 10  # seconds between checks for stranded batches (0: off)
    batch_lease: int = 15  # seconds a worker holds a batch without renewing (it renews every third)
    requeue_after: int = 30  # a batch queued this long while its queue is empty was lost: resend
    max_batch_attempts: int = 3  # a batch that fails this often fails its images
    secret_key: str = ""  # empty: a random key made on first start, kept 0600 in data_dir
    patient_key: str = ""  # keys the hash of PatientID; empty: made like secret_key (brainscan.keys)
    session_cookie_secure: bool = False  # True behind HTTPS
    max_upload_bytes: int = 2 * 1024**3
    upload_retention_hours: int = 72  # uploads are deleted this long after their job finishes; 0: kept
    received_retention_hours: int = 72  # studies received over DICOM: the same for each delivery; 0: kept
    disk_quota_gb: float = 0.0  # uploads, received and pulled studies kept under this; 0: none
    max_archive_files: int = 1_000_000
    max_archive_bytes: int = 20 * 1024**3  # total uncompressed size
    max_compression_ratio: float = 200.0
    max_image_pixels: int = 4096 * 4096  # larger are refused as decompression bombs (= training.decode's)
    api_host: str = "127.0.0.1"  # `brainscan api` binds here; 0.0.0.0 in a container
    api_port: int = 8000
    api_workers: int = 2  # gunicorn processes, each serving several threads (polling is light)
    proxies: int = 0  # reverse proxies in front of the API: their X-Forwarded-For/-Proto are trusted
    dicom_host: str = "127.0.0.1"  # the DICOM listener binds here
    dicom_port: int = 0  # the DICOM listener (C-ECHO, C-STORE); 0: no listener
    dicom_ae_title: str = "BRAINSCAN"
    dicom_callers: str = ""  # calling AE titles allowed, comma-separated; empty: any
    dicom_addresses: str = "127.0.0.1"  # client addresses allowed, comma-separated; "*": any
    dicom_stable_seconds: float = 30.0  # a study with no new instance this long becomes a job
    dicomweb_sources: str = ""  # DICOMweb roots jobs may retrieve from: URL prefixes, comma-separated
    dicom_destinations: str = ""  # where study results go: "pacs=dicom://AE@host:port, w=https://..."
    webhook_url: str = ""  # POSTed when a job ends (worker/notify.py); empty: none
    webhook_secret: str = ""  # signs each webhook (HMAC-SHA256); required with a webhook_url
    log_level: str = "INFO"
    extra: tuple[tuple[str, str], ...] = ()  # unknown BRAINSCAN_* variables, kept to warn about

    @property
    def destinations(self) -> dict[str, Destination]:
        """BRAINSCAN_DICOM_DESTINATIONS by name (SettingsError where one is malformed)."""
        found: dict[str, Destination] = {}
        for entry in (e.strip() for e in self.dicom_destinations.split(",")):
            if entry:
                destination = Destination.parse(entry)
                found[destination.name] = destination
        return found

    @property
    def pull_sources(self) -> list[str]:
        """BRAINSCAN_DICOMWEB_SOURCES: the URL prefixes a job may retrieve from, without a final /."""
        return [u.strip().rstrip("/") for u in self.dicomweb_sources.split(",") if u.strip()]

    def may_pull_from(self, url: str) -> bool:
        """Whether `url` is one of BRAINSCAN_DICOMWEB_SOURCES or lies under one."""
        url = url.strip().rstrip("/")
        return any(url == p or url.startswith(p + "/") for p in self.pull_sources)

    @property
    def disk_quota_bytes(self) -> int:
        """The quota in bytes; 0: none."""
        return int(self.disk_quota_gb * 1024**3)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "brainscan.db"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "session-key"

    @property
    def patient_key_file(self) -> Path:
        return self.data_dir / "patient-key"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def pulled_dir(self) -> Path:
        """Where studies retrieved over DICOMweb (WADO-RS) are written, a folder per job."""
        return self.data_dir / "pulled"

    @property
    def received_dir(self) -> Path:
        """Where the DICOM listener writes what it receives, by study, delivery, series and SOP UID."""
        return self.data_dir / "received"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost/"

    @property
    def resolved_archive_root(self) -> Path:
        return (self.archive_root or self.data_dir / "archive").resolve()

    @property
    def source_roots(self) -> tuple[Path, ...]:
        """Where a job's images may be read from: the archive root, the upload folder, what the
        DICOM listener received and what was retrieved over DICOMweb."""
        return (
            self.resolved_archive_root,
            self.upload_dir.resolve(),
            self.received_dir.resolve(),
            self.pulled_dir.resolve(),
        )

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    def misspellings(self) -> list[tuple[str, str]]:
        """(variable, the setting it most resembles) for each unknown BRAINSCAN_* variable close
        to a real setting's name: a typo would otherwise leave that setting at its default.
        Unknown variables that resemble none (tools' own, e.g. BRAINSCAN_TEST_REDIS) are fine."""
        # compared without the prefix, which makes any two names look alike (PORT vs API_PORT)
        names = [f.name.upper() for f in variables().values()]
        found = []
        for key, _ in self.extra:
            close = difflib.get_close_matches(key.removeprefix(PREFIX), names, n=1, cutoff=0.8)
            if close:
                found.append((key, PREFIX + close[0]))
        return found

    def misspelling_warnings(self) -> list[str]:
        """One line per misspelt variable, as the CLI prints them and the web app logs them."""
        return [
            f"{key} is not a brainscan setting and is ignored; did you mean {meant}?"
            for key, meant in self.misspellings()
        ]

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (CLI options win over the environment)."""
        clean = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **clean)

    def validate(self) -> Settings:
        """Refuse settings that are unsafe or cannot work."""
        if self.env not in ("development", "production", "test"):
            raise SettingsError(f"BRAINSCAN_ENV must be development, production or test, not {self.env!r}")
        for name, key in (("SECRET_KEY", self.secret_key), ("PATIENT_KEY", self.patient_key)):
            if key and len(key) < MIN_SECRET_LENGTH:
                raise SettingsError(
                    f"BRAINSCAN_{name} must be at least {MIN_SECRET_LENGTH} characters "
                    "(e.g. openssl rand -hex 32), or unset to use a key made on first start"
                )
        if self.batch_lease < 3:
            raise SettingsError(f"BRAINSCAN_BATCH_LEASE must be at least 3 seconds, not {self.batch_lease}")
        if self.batch_size < 1:
            raise SettingsError("BRAINSCAN_BATCH_SIZE must be at least 1")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise SettingsError("BRAINSCAN_THRESHOLD must lie between 0 and 1")
        if self.batch_time_limit <= self.batch_soft_time_limit:
            raise SettingsError("BRAINSCAN_BATCH_TIME_LIMIT must exceed BRAINSCAN_BATCH_SOFT_TIME_LIMIT")
        if self.webhook_url and len(self.webhook_secret) < 16:
            raise SettingsError(
                "BRAINSCAN_WEBHOOK_URL needs BRAINSCAN_WEBHOOK_SECRET (16+ characters) to sign with"
            )
        if not 0 <= self.dicom_port <= 65535:
            raise SettingsError("BRAINSCAN_DICOM_PORT must be a port number (0: no DICOM listener)")
        if not 1 <= len(self.dicom_ae_title) <= 16:
            raise SettingsError("BRAINSCAN_DICOM_AE_TITLE must have 1 to 16 characters")
        self.destinations  # noqa: B018 (parsing is the check)
        if any(not u.startswith(("http://", "https://")) for u in self.pull_sources):
            raise SettingsError("BRAINSCAN_DICOMWEB_SOURCES: each is an http:// or https:// URL")
        if self.disk_quota_gb < 0:
            raise SettingsError("BRAINSCAN_DISK_QUOTA_GB must be 0 (no quota) or more")
        if self.visibility_timeout <= self.batch_time_limit:
            raise SettingsError("BRAINSCAN_VISIBILITY_TIMEOUT must exceed the batch time limit")
        return self


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(raw: str) -> bool:
    """A true/false word as brainscan reads it everywhere (environment, --set, REST filters):
    1/true/yes/on or 0/false/no/off, any case; any other word is refused, never read as false."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, not {raw!r}")


def _convert(raw: str, annotation: str) -> Any:
    if "bool" in annotation:
        return parse_bool(raw)
    if "Path" in annotation:
        return Path(raw).expanduser()
    if "float" in annotation:
        return float(raw)
    if "int" in annotation:
        return int(raw)
    return raw


def variables() -> dict[str, Field[Any]]:
    """Each setting's environment variable name (BRAINSCAN_<FIELD>) and its field."""
    return {PREFIX + f.name.upper(): f for f in fields(Settings) if f.name != "extra"}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate Settings from BRAINSCAN_* variables (the process environment by default)."""
    env = os.environ if environ is None else environ
    known = variables()
    values: dict[str, Any] = {}
    for key, f in known.items():
        if env.get(key, "").strip():  # unset or empty (compose's `${X:-}`): the default
            try:
                values[f.name] = _convert(env[key], str(f.type))
            except ValueError as exc:
                raise SettingsError(f"{key}={env[key]!r} is not valid: {exc}") from exc
    values["extra"] = tuple(sorted((k, v) for k, v in env.items() if k.startswith(PREFIX) and k not in known))
    return Settings(**values).validate()
