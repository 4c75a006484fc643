"""`brainscan up` end to end: start it, submit seed-253 over REST, match `brainscan evaluate`, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import BRAINSCAN, REPO, free_port
from tests.worker.test_reliability import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.data]


class Up:
    """A `brainscan up` process and what its banner told us."""

    def __init__(
        self, data_dir: Path, archive_root: Path, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                BRAINSCAN,
                "up",
                "--data-dir",
                str(data_dir),
                "--archive-root",
                str(archive_root),
                "--port",
                str(port),
                "--concurrency",
                "2",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")} | (env or {}),
        )
        self.banner = self._read_banner()

    def _read_banner(self, timeout: float = 120) -> str:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                return "".join(lines)
        raise AssertionError("brainscan up did not start:\n" + "".join(lines))

    def request(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def children(self) -> list[int]:
        """The API and worker processes `up` started."""
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in text.split()]

    def stop(self) -> tuple[int, str]:
        """Ctrl-C in the terminal: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, out

    def terminate(self) -> float:
        """SIGTERM to `up` alone, as a service manager sends it; seconds until it exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=120)
        return time.monotonic() - started


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
