"""Every command that README.md and docs/api.md print, run as printed (the README's from a
checkout beside `shared/data`, docs/api.md's against a fresh `brainscan up`), in order.

A documented step that cannot be done is a bug: a new command in either file runs here unless
NOT_RUN names it with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import REPO, free_port
from tests.cli.test_up import Up
from tests.images import create_random_slice, save_image

pytestmark = [pytest.mark.slow, pytest.mark.data]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
NOT_RUN = {  # a command's start -> why this test does not run it
    "scripts/run": "starts `brainscan up` in the foreground, which tests/cli/test_up.py runs",
    "scripts/test": "the test suite itself",
    ".venv/bin/brainscan train ../shared/data --cv 5": "hours on 2 cores; tests/training trains tiny recipes",
    "export BS=": "names the instance and token: this test sets BS and TOKEN to the `up` it starts",
}
PASSWORD = "a long enough password"
ASKED = {  # what an interactive command is answered on standard input
    "brainscan user create alice": f"{PASSWORD}\n{PASSWORD}\n",
    "brainscan user set-password alice": f"{PASSWORD}\n{PASSWORD}\n",
    "brainscan user delete alice": "y\n",
}


def commands(markdown: Path) -> list[str]:
    """The shell commands of the file's plain fenced blocks (not ```json), continuation lines joined."""
    found: list[str] = []
    for language, body in FENCE.findall(markdown.read_text()):
        if not language:
            found += [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    return found


def to_run(markdown: Path) -> list[str]:
    listed = commands(markdown)
    assert listed, f"no commands found in {markdown}"
    return [command for command in listed if not any(command.startswith(skip) for skip in NOT_RUN)]


def test_every_reason_not_to_run_a_command_still_names_one() -> None:
    listed = commands(REPO / "README.md") + commands(REPO / "docs" / "api.md")
    assert [s for s in NOT_RUN if not any(c.startswith(s) for c in listed)] == []


def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    stdin = next((answer for start, answer in ASKED.items() if command.startswith(start)), "")
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (
        f"{command}\nexit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )
    return done.stdout


def test_the_readme_commands_run_as_printed(tmp_path: Path, shared_data: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    for i in range(3):
        save_image(checkout / "some" / "folder" / f"slice-{i}.png", create_random_slice(128, seed=i))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")}
    outputs = [run(command, checkout, env) for command in to_run(REPO / "README.md")]
    seed = json.loads(outputs[0])
    assert seed["n"] == 253 and 0 < seed["recall"] <= 1
    assert '"level": "study"' in outputs[1] or "110" in outputs[1]
    assert len(outputs[2].splitlines()) == 4  # header and one row per image


def _seed_ids(data_dir: Path, root: Path) -> None:
    """An earlier, cancelled job 41 with one image row 1233: the examples' job 42 and result 1234
    are the next ones SQLite hands out."""
    from db.engine import make_engine, session_factory
    from db.models import Batch, ImageResult, Job, utcnow

    engine = make_engine(f"sqlite:///{data_dir / 'brainscan.db'}")
    with session_factory(engine).begin() as session:
        session.add(
            Job(
                id=41,
                source="earlier",
                source_kind="folder",
                source_path=str(root),
                status="cancelled",
                submitted_by="user:admin",
                model_version="earlier",
                threshold=0.5,
                batch_size=1,
                total=1,
                finished_at=utcnow(),
            )
        )
        session.flush()  # no relationships: the unit of work would not order the three inserts
        session.add(Batch(id=41, job_id=41, index=0, size=1, status="cancelled"))
        session.flush()
        session.add(ImageResult(id=1233, job_id=41, batch_id=41, relpath="earlier.png", status="pending"))
    engine.dispose()


def _settle(up: Up, token: str) -> None:
    """Wait until no job is queued, planning or running (a command after a submission reads its
    finished job, as a reader following the page would)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = up.request("GET", "/api/v1/jobs?limit=100", token)["jobs"]
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs did not finish: {jobs}")


def _error(output: str) -> dict[str, Any] | None:
    try:
        answer = json.loads(output)
    except ValueError:
        return None
    return answer.get("error") if isinstance(answer, dict) else None


def test_the_api_guide_commands_run_as_printed_against_brainscan_up(tmp_path: Path) -> None:
    archive, data_dir, work = tmp_path / "archive", tmp_path / "data", tmp_path / "work"
    ward = archive / "ward-3" / "2026-11"
    for i in range(4):
        save_image(ward / "yes" / f"y{i}.png", create_random_slice(128, seed=i, lesion=True))
        save_image(ward / "no" / f"n{i}.png", create_random_slice(128, seed=10 + i))
    (ward / "no" / "still-copying.png").write_bytes(b"")  # fails, and may read on a re-run
    work.mkdir()
    with zipfile.ZipFile(work / "ward-3.zip", "w") as upload:
        for path in sorted(ward.rglob("*.png")):
            upload.write(path, path.relative_to(ward))
    up = Up(data_dir, archive, free_port())
    try:
        token = re.search(r"API token:\s+(bs_\S+)", up.banner).group(1)  # type: ignore[union-attr]
        _seed_ids(data_dir, archive)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")}
        env |= {
            "BS": up.url,
            "TOKEN": token,
            "PW": PASSWORD,
            "BRAINSCAN_DATA_DIR": str(data_dir),
            "PATH": f"{REPO / '.venv' / 'bin'}:{env['PATH']}",
        }
        for command in to_run(REPO / "docs" / "api.md"):
            output = run(command, work, env)
            print(f"$ {command}\n{output[:400]}")  # shown when the test fails
            error = _error(output)
            expected = re.search(r"#.*\b(4\d\d)\b", command)
            if error is not None:
                assert expected, f"{command}\nanswered {error}"
            _settle(up, token)
        job = up.request("GET", "/api/v1/jobs/42", token)
        assert job["source"] == "ward-3/2026-11" and job["rerun_at"] is not None
        reviewed = up.request("GET", "/api/v1/jobs/42/reviewed", token)
        assert sum(reviewed["reviewed"].values()) == 1, reviewed  # result 1234, as the guide says
        assert (work / "labels.csv").read_text().startswith("path,label")
        assert list(work.glob("*.csv")) != [work / "labels.csv"]  # the results download
    finally:
        up.stop()
