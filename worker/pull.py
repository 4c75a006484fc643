"""Studies retrieved over DICOMweb: a job submitted as {"dicomweb": {"url", "study"}} fetches its
studies with WADO-RS (dicomweb-client) into its own folder before the planner walks it.

Instances are asked for in the transfer syntax the archive holds them in (brainscan decodes the
common ones), written as `<study>/<series>/<sop>.dcm` (UIDs checked, each file written aside and
renamed), under the same limits as an upload: BRAINSCAN_MAX_ARCHIVE_FILES files and
BRAINSCAN_MAX_ARCHIVE_BYTES bytes in all, and the disk quota. A file already there (a planner
that died half-way and is planning again) is not fetched twice. The URL must lie under
BRAINSCAN_DICOMWEB_SOURCES, checked again here.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from brainscan.disk import QuotaGauge
from brainscan.settings import Settings
from worker.receive import valid_uid, write_file

log = logging.getLogger(__name__)
ANY_SYNTAX = (("application/dicom", "*"),)  # as stored: no transcoding by the archive


class PullError(Exception):
    """The studies could not be retrieved; the job fails with this message."""


def retrieve(pull: dict[str, Any], folder: Path, *, settings: Settings, client: Any = None) -> int:
    """Fetch every instance of pull["studies"] from pull["url"] into `folder`; the instances now
    there. `client`: a DICOMwebClient (tests pass one); made from the URL otherwise."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    url = str(pull.get("url", ""))
    if not settings.may_pull_from(url):
        raise PullError(f"{url} is not in BRAINSCAN_DICOMWEB_SOURCES")
    client = client or DICOMwebClient(url=url, timeout=60)
    quota = QuotaGauge(settings)
    files = total = 0
    for study in pull.get("studies", []):
        fetched = 0
        try:
            for ds in client.iter_study(study, media_types=ANY_SYNTAX):
                target = _target(folder, ds)
                if target is None:
                    raise PullError(f"study {study}: an instance without valid UIDs")
                fetched += 1
                files += 1
                if files > settings.max_archive_files:
                    raise PullError(f"the studies hold more than {settings.max_archive_files:,} instances")
                if target.exists():
                    total += target.stat().st_size
                    continue
                data = _encoded(ds)
                total += len(data)
                if total > settings.max_archive_bytes:
                    raise PullError(f"the studies are larger than {settings.max_archive_bytes:,} bytes")
                if quota.full(len(data)):
                    raise PullError("the disk quota (BRAINSCAN_DISK_QUOTA_GB) is full: try again later")
                write_file(data, target)
                quota.wrote(len(data))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            if status == 404:
                raise PullError(f"study {study} is not at {url} (HTTP 404)") from exc
            raise PullError(f"retrieving study {study} from {url}: HTTP {status}") from exc
        except requests.RequestException as exc:
            raise PullError(
                f"retrieving study {study} from {url}: not reached ({type(exc).__name__})"
            ) from exc
        if not fetched:
            raise PullError(f"study {study} is not at {url} (no instance)")
    log.info(
        "retrieved %d instance(s), %d bytes, of %d study(ies)", files, total, len(pull.get("studies", []))
    )
    return files


def _target(folder: Path, ds: Any) -> Path | None:
    uids = [valid_uid(ds.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if any(u is None for u in uids):
        return None
    study, series, sop = uids
    return folder / str(study) / str(series) / f"{sop}.dcm"


def _encoded(ds: Any) -> bytes:
    """The instance as a DICOM file (its pixel data as it came: nothing is decoded)."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
