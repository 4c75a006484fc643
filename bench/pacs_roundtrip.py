"""Seconds from the last instance of a study sent by a PACS to brainscan's SR in that PACS.

    python bench/pacs_roundtrip.py [--studies 5] [--stable 2] [--watchdog 1]

Issue 40's figure, with real processes on loopback: Orthanc (Debian's orthanc and
orthanc-dicomweb) holds the DICOM test archive of the first N lgg-flair patients
(bench/dicom_archive.py: one study each, compressed syntaxes, one multi-frame file); `brainscan
up` runs with its DICOM listener, BRAINSCAN_DICOM_STABLE_SECONDS=--stable and the SR going back
to Orthanc by C-STORE, its watchdog every --watchdog seconds. For each study in turn Orthanc
C-STOREs it to the listener (the call returns when the last instance is acknowledged); the clock
runs until QIDO-RS finds brainscan's SR in the study. Each study's time is split by the job's own
timestamps: waiting for the study to be stable (the configured floor, the baseline every figure
is compared with), the job (created to finished: planning and scoring), and the delivery
(finished to the SR stored, the watchdog's sweep and the C-STORE).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from dicom_archive import build_archive  # noqa: E402

from brainscan.testing import Up, free_port, running_orthanc, wait_for  # noqa: E402
from worker.pacs import SR_SERIES_NUMBER  # noqa: E402


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--studies", type=int, default=5, help="the first N lgg-flair patients, one study each"
    )
    parser.add_argument("--stable", type=float, default=2.0, help="BRAINSCAN_DICOM_STABLE_SECONDS")
    parser.add_argument("--watchdog", type=int, default=1, help="BRAINSCAN_WATCHDOG_INTERVAL (seconds)")
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "lgg-flair")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="brainscan-pacs-") as tmp:
        work = Path(tmp)
        build_archive(args.src, work / "export", patients=args.studies)
        listener_port = free_port()
        with running_orthanc(
            work / "orthanc", modalities={"brainscan": ("BRAINSCAN", listener_port)}
        ) as pacs:
            studies: dict[str, str] = {}  # Orthanc id -> StudyInstanceUID
            for path in sorted((work / "export").rglob("*")):
                if path.is_file() and path.name[:2] in ("IM", "MF", "SR", "PR"):
                    orthanc_id = pacs.upload([path])
                    if orthanc_id not in studies:
                        tags = pacs.json("GET", f"/studies/{orthanc_id}")["MainDicomTags"]
                        studies[orthanc_id] = tags["StudyInstanceUID"]
            env = {
                "BRAINSCAN_DICOM_PORT": str(listener_port),
                "BRAINSCAN_DICOM_STABLE_SECONDS": str(args.stable),
                "BRAINSCAN_DICOM_DESTINATIONS": f"pacs=dicom://ORTHANC@127.0.0.1:{pacs.dicom_port}",
                "BRAINSCAN_WATCHDOG_INTERVAL": str(args.watchdog),
            }
            up = Up(work / "data", work, free_port(), env=env)
            try:
                token = re.search(r"API token:\s+(bs_\S+)", up.banner).group(1)  # type: ignore[union-attr]
                rows = []
                for orthanc_id, study_uid in studies.items():
                    instances = len(pacs.json("GET", f"/studies/{orthanc_id}/instances"))
                    pacs.send_study("brainscan", orthanc_id)
                    sent = time.monotonic()
                    if not wait_for(
                        lambda uid=study_uid: pacs.find_instances(uid, "SR", SR_SERIES_NUMBER), 300
                    ):
                        raise SystemExit(f"no SR came back for study {len(rows) + 1}")
                    total = time.monotonic() - sent
                    newest = up.request("GET", "/api/v1/jobs?limit=1", token)["jobs"][0]["id"]

                    def marked(job_id: int = newest) -> dict[str, Any] | None:
                        job = up.request("GET", f"/api/v1/jobs/{job_id}", token)
                        return (
                            job if job["deliveries"][0]["delivered_at"] else None
                        )  # marked after the C-STORE

                    assert wait_for(lambda: marked() is not None, 30)
                    job = marked()
                    assert job is not None
                    (delivery,) = job["deliveries"]
                    run = seconds(job["created_at"], job["finished_at"])
                    send = seconds(job["finished_at"], delivery["delivered_at"])
                    rows.append((instances, total, run, send))
                    print(
                        f"study {len(rows)}: {instances} instances ({job['total']} images), SR in the PACS "
                        f"{total:.2f} s after the last instance: job {run:.2f} s, delivery {send:.2f} s"
                    )
            finally:
                up.stop()
    total = statistics.median(r[1] for r in rows)
    run = statistics.median(r[2] for r in rows)
    send = statistics.median(r[3] for r in rows)
    print(
        f"\nmedian of {len(rows)}: {total:.2f} s from the last instance to the SR in the PACS "
        f"= {total / args.stable:.2f} x the stable time ({args.stable:g} s, the floor); "
        f"job {run:.2f} s, delivery {send:.2f} s, the rest ({total - run - send:.2f} s) waiting "
        "for the study to be stable and the listener's sweep"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
