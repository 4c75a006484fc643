"""Job throughput as the service delivers it: the DICOM test archive against the same slices as
JPEG, each submitted to a running `brainscan up`.

    python bench/dicom_service_speed.py [--patients 110] [--repeats 3] [--uncompressed]

bench/dicom_speed.py times planning and scoring one after the other in one process, the worst
case. Here the service runs as a department runs it on one machine: `brainscan up` (SQLite, the
embedded queue, one worker with two processes), whose planner enqueues each batch as soon as it
is recorded, so scoring overlaps the header reading of the files still to plan. The archive is
bench/dicom_archive.py's of the first N lgg-flair patients (by default all 110: about 3,900
slices, 42 % of them in compressed transfer syntaxes, none with --uncompressed, one Enhanced MR
file); the baseline is the same slices' source JPEGs, in the same run. After one untimed job on
each, jobs alternate between the two folders; a job's time is its own record, created to
finished (queueing, planning, scoring), and its CPU time that of every process of the service
(server, worker pool, its decode and TensorFlow threads) over the job. Medians, the ratio DICOM /
JPEG, and PASS when it is >= 0.8 (issue 36). The CPU ratio (JPEG's CPU-ms an image / DICOM's)
is what a saturated machine can do, and moves less between runs than the job ratio.
"""

from __future__ import annotations

import os
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
from dicom_speed import TARGET, archive_parser, jpeg_baseline  # noqa: E402

from brainscan.testing import Up, free_port  # noqa: E402


def service_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process `pid` (`brainscan up`) and its descendants (the web
    server, the worker and its pool, each in its own session), children they reaped included
    (Linux /proc)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name
        except (OSError, IndexError):
            continue  # ended meanwhile
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        ticks[process] = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    family, grown = {pid}, True
    while grown:
        found = {p for p, parent in parents.items() if parent in family} - family
        family, grown = family | found, bool(found)
    return sum(ticks.get(p, 0) for p in family) / os.sysconf("SC_CLK_TCK")


def run(up: Up, token: str, folder: str) -> tuple[int, float, float]:
    """Submit the folder and wait for its job: (images, seconds from created to finished, CPU
    seconds the service used meanwhile)."""
    cpu = service_cpu_seconds(up.proc.pid)
    job = up.request("POST", "/api/v1/jobs", token, {"source": folder})
    deadline = time.monotonic() + 1800
    while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = up.request("GET", f"/api/v1/jobs/{job['id']}", token)
    if job["status"] != "succeeded":
        raise SystemExit(f"{folder}: job {job['id']} {job['status']}: {job.get('error')}")
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    return int(job["total"]), seconds, service_cpu_seconds(up.proc.pid) - cpu


def main() -> int:
    args = archive_parser(__doc__, patients=110).parse_args()
    with tempfile.TemporaryDirectory(prefix="brainscan-dicom-service-") as tmp:
        root = Path(tmp) / "archive"
        summary = build_archive(
            args.src, root / "dicom", patients=args.patients, compressed=not args.uncompressed
        )
        slices = len(jpeg_baseline(args.src, root / "jpeg", patients=args.patients))
        print(f"{summary.studies} patients, {slices} slices: DICOM {summary.instances} image files")
        up = Up(Path(tmp) / "data", root, free_port())
        try:
            token = re.search(r"API token:\s+(bs_\S+)", up.banner).group(1)  # type: ignore[union-attr]
            for folder in ("dicom", "jpeg"):  # warm: page cache, decoders, the model's graph
                run(up, token, folder)
            rates: dict[str, list[float]] = {"dicom": [], "jpeg": []}
            cpu_ms: dict[str, list[float]] = {"dicom": [], "jpeg": []}
            for repeat in range(args.repeats):
                for folder in ("dicom", "jpeg") if repeat % 2 == 0 else ("jpeg", "dicom"):
                    images, seconds, cpu = run(up, token, folder)
                    rates[folder].append(rate := images / seconds)
                    cpu_ms[folder].append(per_image := 1000 * cpu / images)
                    print(
                        f"  {folder:<5} run {repeat + 1}: {images} images in {seconds:.2f} s, {rate:.0f}/s, "
                        f"{per_image:.2f} CPU-ms an image"
                    )
        finally:
            up.stop()
    medians: dict[str, Any] = {k: statistics.median(v) for k, v in rates.items()}
    ratio = medians["dicom"] / medians["jpeg"]
    cpu_medians = {k: statistics.median(v) for k, v in cpu_ms.items()}
    print(f"\nmedian of {args.repeats}: DICOM {medians['dicom']:.0f}, JPEG {medians['jpeg']:.0f} images/s")
    print(
        f"CPU-ms an image: DICOM {cpu_medians['dicom']:.2f}, JPEG {cpu_medians['jpeg']:.2f}; "
        f"CPU ratio {cpu_medians['jpeg'] / cpu_medians['dicom']:.2f}"
    )
    print(f"job ratio {ratio:.2f} (target >= {TARGET}): {'PASS' if ratio >= TARGET else 'FAIL'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
