"""`brainscan up`'s start-up checks and its children's tie to it, without starting a service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brainscan import embedded
from brainscan.testing import BRAINSCAN, REPO, free_port


def _up(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")}
    return subprocess.run(
        [BRAINSCAN, "up", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_up_on_a_port_in_use_fails_at_once_naming_it_and_prints_no_banner(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = _up(tmp_path / "data", port)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "is running at" not in result.stdout + result.stderr and "admin /" not in result.stdout
    assert not (tmp_path / "data" / embedded.CREDENTIALS).exists()  # no login made for no server


def test_a_second_up_on_a_served_data_folder_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fd = embedded.claim_data_dir(data_dir)  # as the first `up` holds it
    try:
        result = _up(data_dir, free_port())
    finally:
        os.close(fd)
    assert result.returncode != 0
    assert f"already served by another brainscan up (process {os.getpid()})" in result.stderr
    assert not (data_dir / embedded.CREDENTIALS).exists()
    os.close(embedded.claim_data_dir(data_dir))  # free again once its holder is gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_child_of_up_dies_when_up_is_killed(tmp_path: Path) -> None:
    """`up` SIGKILLed (nothing runs its clean-up): its children get SIGTERM from the kernel."""
    pid_file = tmp_path / "child.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        "from brainscan.embedded import _die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True, preexec_fn=_die_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie (exited, not yet reaped by init) is gone too
        return stat.read().split(") ")[-1][0] != "Z"


def test_stopping_gives_a_child_sigterm_then_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = embedded.Child("stubborn", [sys.executable, "-c", code], dict(os.environ), tmp_path / "log")
    child.start()
    time.sleep(0.5)
    started = time.monotonic()
    embedded.stop_all([child], timeout=1)
    assert not child.alive() and time.monotonic() - started < 5
    assert child.proc is not None and child.proc.returncode == -signal.SIGKILL
