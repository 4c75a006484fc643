"""`brainscan dicom-listener` as its own process: it listens, a study sent to it becomes a job in
the database and a message to the planner, and SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pydicom.uid import generate_uid

from brainscan.testing import BRAINSCAN, free_port, wait_for
from db.engine import get_sessionmaker
from db.jobs import list_jobs
from tests.worker.test_receive import instance, register_a_model, send


def test_the_listener_process_makes_a_job_of_a_study_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")}
    env |= {
        "BRAINSCAN_DATA_DIR": str(tmp_path / "data"),
        "BRAINSCAN_DICOM_PORT": str(port),
        "BRAINSCAN_DICOM_STABLE_SECONDS": "1",
    }
    subprocess.run([BRAINSCAN, "db", "upgrade"], env=env, check=True, capture_output=True)
    sessions = get_sessionmaker(f"sqlite:///{(tmp_path / 'data' / 'brainscan.db').resolve()}")
    register_a_model(sessions)
    log = tmp_path / "listener.log"
    with log.open("wb") as out:
        listener = subprocess.Popen(
            [BRAINSCAN, "dicom-listener"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for(lambda: b"DICOM listener BRAINSCAN on 127.0.0.1" in log.read_bytes(), 30), (
            log.read_text()
        )
        study, series = generate_uid(), generate_uid()
        files = [instance(tmp_path / "out", study, series, n) for n in (1, 2)]
        assert send(port, files) == [0, 0, 0]

        def made() -> bool:
            with sessions() as session:
                return [j.source for j in list_jobs(session=session)] == [f"received/{study}/1"]

        assert wait_for(made, 15), log.read_text()
        assert any((tmp_path / "data" / "broker").rglob("*")), "no message was sent to the planner"
    finally:
        started = time.monotonic()
        listener.send_signal(signal.SIGTERM)
        code = listener.wait(15)
    assert code == 0 and time.monotonic() - started < 5
    assert "DICOM listener stopped" in log.read_text()
