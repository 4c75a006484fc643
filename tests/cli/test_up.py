"""`brainscan up` end to end: start it, submit seed-253 over REST, match `brainscan evaluate`, restart."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from brainscan.testing import Up, free_port
from tests.worker.test_reliability import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_up_serves_a_job_whose_matrix_equals_evaluate_and_keeps_data_across_restarts(
    tmp_path: Path, shared_data: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = Up(data_dir, shared_data, port)
    try:
        assert f"brainscan is running at http://127.0.0.1:{port}" in first.banner
        assert str(shared_data) in first.banner
        token = re.search(r"API token:\s+(bs_\S+)", first.banner).group(1)  # type: ignore[union-attr]
        assert re.search(r"web login:\s+admin / \S+", first.banner)
        with urllib.request.urlopen(first.url + "/healthz", timeout=5) as response:
            assert response.status == 200
        job = first.request("POST", "/api/v1/jobs", token, {"source": "seed-253"})
        deadline = time.monotonic() + 240
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(1)
            job = first.request("GET", f"/api/v1/jobs/{job['id']}", token)
        assert job["status"] == "succeeded", job
        assert job["total"] == job["scored"] == 253 and job["failed"] == 0
        matrix = job["confusion"]
        assert (matrix["tp"], matrix["fp"], matrix["tn"], matrix["fn"]) == evaluate(shared_data / "seed-253")
    finally:
        code, out = first.stop()
    assert code == 0 and "stopped" in out
    second = Up(data_dir, shared_data, port)
    try:
        assert "password in" in second.banner and "API token:     bs_" not in second.banner
        hint = re.search(r"or: (BRAINSCAN_DATA_DIR=\S+ \S+ token create .+)$", second.banner, re.M)
        assert hint, second.banner  # the banner's command runs as printed, from any folder
        made = subprocess.run(hint.group(1), shell=True, capture_output=True, text=True, cwd="/", check=False)
        assert made.returncode == 0 and "bs_" in made.stdout, made.stderr
        again = second.request("GET", f"/api/v1/jobs/{job['id']}", token)  # the old token still works
        assert again["status"] == "succeeded" and again["confusion"] == matrix
        second.request("POST", "/api/v1/jobs", token, {"source": "seed-253"})  # busy when told to stop
        time.sleep(3)
        children = second.children()
        assert len(children) == 2
        took = second.terminate()
        print(f"up stopped {took:.1f} s after SIGTERM, mid-job")
        assert took < 15 and not any(Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        if second.proc.poll() is None:
            second.stop()
