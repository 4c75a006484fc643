"""Attacks from the hostile probe of a default install (issue 33), each reproduced against the app.

Every test here failed before its fix: it plays the attacker's request and asserts what a
defended service answers.
"""

from __future__ import annotations

import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient

from api import create_app
from api.thumbnails import PreviewPool, ThumbnailError
from brainscan.settings import Settings, SettingsError
from tests.api.conftest import bearer
from tests.images import create_random_slice, save_image, write_deflated_dicom_bomb

OLD_BUILT_IN_KEY = "dev-only-secret-change-me"  # the key every install signed sessions with before


def forged_cookie(key: str, payload: dict[str, object]) -> str:
    """A session cookie signed with `key`, as an attacker who knows that key makes one."""
    forger = Flask("forger")
    forger.secret_key = key
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    assert serializer is not None
    return str(serializer.dumps(payload))


def test_a_session_forged_with_the_old_built_in_key_is_not_accepted(
        api_settings: Settings, operator: str) -> None:
    default_install = replace(api_settings, secret_key=Settings().secret_key)  # no key configured
    client = create_app(default_install, {"TESTING": True}).test_client()
    client.set_cookie("brainscan_session", forged_cookie(OLD_BUILT_IN_KEY, {"user_id": 1}))
    assert client.get("/api/v1/jobs", headers={"Accept": "application/json"}).status_code == 401
    page = client.get("/jobs")
    assert page.status_code == 302 and "/login" in page.headers["Location"]


def test_a_fresh_install_makes_its_own_session_key_kept_private_and_across_restarts(
        api_settings: Settings) -> None:
    assert api_settings.secret_key == ""
    first = create_app(api_settings).secret_key
    key_file = api_settings.secret_key_file
    assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert isinstance(first, str) and len(first) >= 64 and first != OLD_BUILT_IN_KEY
    assert create_app(api_settings).secret_key == first  # a restart keeps web logins valid
    other = Settings(env="test", data_dir=api_settings.data_dir.parent / "other-instance")
    assert create_app(other).secret_key != first  # each install its own


def test_a_readable_key_file_or_a_short_configured_key_stops_the_app(
        api_settings: Settings, tmp_path: Path) -> None:
    create_app(api_settings)
    api_settings.secret_key_file.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        create_app(api_settings)
    with pytest.raises(SettingsError, match="at least 32 characters"):
        create_app(Settings(env="test", data_dir=tmp_path / "d", secret_key="changeme"))


def vm_peak_reset() -> None:
    """Start this process's peak-resident-memory (VmHWM) count afresh."""
    Path("/proc/self/clear_refs").write_text("5")


def vm_kb(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found, field
    return int(found.group(1))


def test_thumbnails_of_a_dicom_bomb_cost_the_api_process_no_memory(
        app: Flask, tokens: dict[str, str], job: int, api_settings: Settings) -> None:
    """Four parallel thumbnail requests with a read token took a gunicorn process to 8.6 GB."""
    client = app.test_client()
    first = client.get(f"/api/v1/jobs/{job}/results", headers=bearer(tokens["read"])).get_json()["results"][0]
    assert api_settings.archive_root is not None
    write_deflated_dicom_bomb(api_settings.archive_root / "ward-1" / first["path"])
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    before = vm_kb("VmRSS")
    vm_peak_reset()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: app.test_client().get(url, headers=bearer(tokens["read"])),
                                range(4)))
    assert [a.status_code for a in answers] == [422] * 4
    assert "possible decompression bomb" in answers[0].get_json()["error"]["message"]
    assert vm_kb("VmHWM") - before < 64 * 1024  # rendering happened in the capped preview processes


def test_a_preview_process_over_its_memory_cap_fails_alone(tmp_path: Path) -> None:
    side = 4096  # the largest 16-bit slice allowed: decoding it needs ~280 MB
    ramp = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    big = save_image(tmp_path / "largest.png", ramp)
    small = save_image(tmp_path / "small.png", create_random_slice(128))
    capped = PreviewPool(processes=1, memory_cap=250 * 1024**2)  # an interpreter with Pillow: ~150 MB
    try:
        with pytest.raises(ThumbnailError, match="memory"):
            capped.render(big, max_pixels=side * side)
        assert capped.render(small, max_pixels=side * side).startswith(b"\x89PNG")  # and it goes on
    finally:
        capped.close()
    assert PreviewPool().render(big, max_pixels=side * side).startswith(b"\x89PNG")  # the default cap fits


def test_thumbnails_are_never_cached(client: FlaskClient, tokens: dict[str, str], job: int) -> None:
    first = client.get(f"/api/v1/jobs/{job}/results?errors=false",
                       headers=bearer(tokens["read"])).get_json()["results"]
    scored = next(r for r in first if r["status"] == "scored")
    response = client.get(f"/api/v1/jobs/{job}/results/{scored['id']}/thumbnail",
                          headers=bearer(tokens["read"]))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
