"""A stat study submitted behind a large archive is scored within seconds, not after it: its
batches go to the stat queue, which workers take from as often as from the routine one (real
worker processes, both deployments)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from brainscan.testing import Service, build_folder, running_worker

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_a_stat_study_overtakes_an_archive_in_the_queue(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    archive = build_folder(shared_data, tmp_path / "archive", 6000)
    urgent = build_folder(shared_data, tmp_path / "urgent", 20)
    with running_worker(service, tmp_path / "worker.log"):
        big, _ = service.submit(archive, batch_size=64)
        service.wait(big, timeout=120, until=("running",))  # planned: about 94 batches queued ahead
        submitted = time.monotonic()
        stat, _ = service.submit(urgent, batch_size=64, priority="stat")
        done = service.wait(stat, timeout=120)
        took = time.monotonic() - submitted
        behind = service.job(big)
        print(f"stat study scored {took:.1f} s after submission; the archive was {behind.status}")
        assert done.status == "succeeded" and done.total == 20
        assert behind.status == "running", "the archive finished first: the stat study waited behind it"
        assert took < 10
        assert service.wait(big, timeout=300).status == "succeeded"
