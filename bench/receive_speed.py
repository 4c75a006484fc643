"""How fast the DICOM listener takes a study in, and how long until it is a job.

    python bench/receive_speed.py [--instances 300] [--stable 2]

Starts the listener (worker/receive.py) in this process on a fresh SQLite database of the
embedded service, then sends one study of N MR slices (256 x 256, 16-bit, uncompressed, as a
scanner writes them) over one association with pynetdicom's SCU in another process (so that the
sender does not share the listener's interpreter) on loopback, and reports the
instances/s received (from the association's start to its last C-STORE response) and the
seconds from the last instance to the job's creation (the stable time plus the sweep's period).
**Baseline**: the same slices written to a folder by pydicom in the same run (what a PACS export
to a folder costs brainscan before a job is submitted).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def send(port: int, files: list[str], out: object) -> None:
    """The sender (in its own process): C-STORE every file in one association; puts the seconds
    from the first request to the last response and the statuses on `out` (a queue)."""
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    slices = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRAINSCAN")
    started = time.perf_counter()
    statuses = [int(assoc.send_c_store(ds).Status) for ds in slices]
    took = time.perf_counter() - started
    assoc.release()
    out.put((took, statuses))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--stable", type=float, default=2.0)
    args = parser.parse_args()

    import multiprocessing

    import pydicom
    from pydicom.uid import generate_uid

    from brainscan.settings import load_settings
    from brainscan.testing import wait_for
    from db.engine import get_sessionmaker
    from db.migrate import upgrade
    from db.model_versions import register_model_version
    from tests.images import write_dicom
    from worker.receive import serve

    with tempfile.TemporaryDirectory(prefix="brainscan-receive-") as tmp:
        work = Path(tmp)
        settings = dataclasses.replace(
            load_settings({"BRAINSCAN_DATA_DIR": str(work / "data")}),
            dicom_port=0,
            dicom_stable_seconds=args.stable,
        )
        settings.data_dir.mkdir()
        upgrade(settings.resolved_database_url)
        sessions = get_sessionmaker(settings.resolved_database_url)
        with sessions.begin() as session:
            register_model_version(
                session=session, version="m", file="m", sha256="0" * 64, threshold=0.5, metrics={}, card={}
            )
        study, series = generate_uid(), generate_uid()
        rng = np.random.default_rng(0)
        slices, files = [], []
        for n in range(args.instances):
            path = write_dicom(work / f"src-{n}.dcm", rng.integers(0, 4096, (256, 256), dtype=np.uint16))
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, n + 1
            ds.save_as(path)
            slices.append(ds)
            files.append(str(path))
        started = time.perf_counter()
        for n, ds in enumerate(slices):  # the baseline: the same slices written to a folder
            ds.save_as(work / f"folder-{n}.dcm", enforce_file_format=True)
        folder_rate = len(slices) / (time.perf_counter() - started)

        jobs: list[tuple[int, float]] = []
        ports: list[int] = []
        stop = threading.Event()
        thread = threading.Thread(
            target=serve,
            args=(settings, sessions, lambda job_id: jobs.append((job_id, time.perf_counter()))),
            kwargs={"stop": stop, "ready": ports.append},
        )
        thread.start()
        wait_for(lambda: bool(ports), 10)
        spawn = multiprocessing.get_context("spawn")
        results = spawn.Queue()
        sender = spawn.Process(target=send, args=(ports[0], files, results))
        sender.start()
        took, statuses = results.get(timeout=600)
        last = time.perf_counter()
        sender.join(30)
        received_rate = len(slices) / took
        wait_for(lambda: bool(jobs), args.stable + 30)
        stop.set()
        thread.join(10)
        to_job = jobs[0][1] - last if jobs else float("nan")
        print(f"{len(slices)} instances (256 x 256, 16-bit), {statuses.count(0)} stored, one association")
        print(f"{'received over DICOM':<32} {received_rate:8.0f} instances/s")
        print(f"{'written to a folder (baseline)':<32} {folder_rate:8.0f} instances/s")
        print(f"{'received / baseline':<32} {received_rate / folder_rate:8.2f} x")
        print(f"{'last instance to job':<32} {to_job:8.2f} s (stable time {args.stable:g} s)")


if __name__ == "__main__":
    main()
