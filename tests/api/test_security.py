"""Attacks from the hostile probe of a default install (issue 33), each reproduced against the app.

Every test here failed before its fix: it plays the attacker's request and asserts what a
defended service answers.
"""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from api import create_app
from brainscan.settings import Settings, SettingsError

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
