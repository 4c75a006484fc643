"""Headless Chromium for the browser tests: Debian's package, never a downloaded browser."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import BRAINSCAN, free_port
from tests.conftest import IN_CI, REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
PASSWORD = "a long operator passphrase"


def require_chromium() -> None:
    """Fail in CI, skip elsewhere, when Debian's Chromium is missing."""
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        pytest.fail(message) if IN_CI else pytest.skip(message)


@contextmanager
def embedded_api(base: Path, env: dict[str, str], *, login: str, scopes: Sequence[str]) -> Iterator[str]:
    """A migrated database for `env` with one web login (`login`, PASSWORD, `scopes`), and `brainscan
    api` (gunicorn, one process) serving it until the block ends: its URL."""
    full_env = {**os.environ, **env}
    subprocess.run([BRAINSCAN, "db", "upgrade"], env=full_env, check=True, capture_output=True, cwd=base)
    subprocess.run(
        [BRAINSCAN, "user", "create", login, "--password-stdin", *(f"--scope={s}" for s in scopes)],
        env=full_env,
        check=True,
        capture_output=True,
        input=PASSWORD.encode(),
        cwd=base,
    )
    port, log = free_port(), base / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [BRAINSCAN, "api", "--port", str(port), "--workers", "1"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", 60, api, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(20)


def wait_for(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
