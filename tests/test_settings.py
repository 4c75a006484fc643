"""Settings from BRAINSCAN_* variables: typed, strict about true/false words, empty means default."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from brainscan.settings import Settings, SettingsError, load_settings, parse_bool


def test_true_false_words_are_read_alike_everywhere_and_others_refused() -> None:
    for word in ("1", "true", "TRUE", "yes", "on", " On "):
        assert parse_bool(word) is True
    for word in ("0", "false", "False", "no", "off"):
        assert parse_bool(word) is False
    for word in ("ture", "maybe", "2", "enabled", ""):
        with pytest.raises(ValueError, match="expected true or false"):
            parse_bool(word)


def test_a_mistyped_true_false_value_stops_the_process_instead_of_reading_as_false() -> None:
    assert load_settings({"BRAINSCAN_SESSION_COOKIE_SECURE": "yes"}).session_cookie_secure is True
    with pytest.raises(SettingsError, match="BRAINSCAN_SESSION_COOKIE_SECURE='ture' is not valid"):
        load_settings({"BRAINSCAN_SESSION_COOKIE_SECURE": "ture"})
    with pytest.raises(SettingsError, match="BRAINSCAN_BATCH_SIZE='lots' is not valid"):
        load_settings({"BRAINSCAN_BATCH_SIZE": "lots"})


def test_an_empty_variable_means_the_default() -> None:
    empty = {
        f"BRAINSCAN_{name}": ""
        for name in (
            "DATA_DIR",
            "MODEL_PATH",
            "THRESHOLD",
            "BATCH_SIZE",
            "MAX_COMPRESSION_RATIO",
            "SESSION_COOKIE_SECURE",
            "ARCHIVE_ROOT",
            "SECRET_KEY",
        )
    }
    assert load_settings(empty) == Settings()
    # an empty secret key means "make one on first start" (brainscan.keys), in production too
    assert load_settings({"BRAINSCAN_ENV": "production", "BRAINSCAN_SECRET_KEY": ""}).secret_key == ""


def test_a_short_session_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="BRAINSCAN_SECRET_KEY must be at least 32 characters"):
        load_settings({"BRAINSCAN_SECRET_KEY": "changeme"})
    assert load_settings({"BRAINSCAN_SECRET_KEY": "k" * 32}).secret_key == "k" * 32


def test_values_are_typed() -> None:
    s = load_settings(
        {"BRAINSCAN_DATA_DIR": "/srv/brainscan", "BRAINSCAN_THRESHOLD": "0.25", "BRAINSCAN_BATCH_SIZE": "64"}
    )
    assert (s.data_dir, s.threshold, s.batch_size) == (Path("/srv/brainscan"), 0.25, 64)


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles() -> None:
    s = load_settings(
        {
            "BRAINSCAN_BATCHSIZE": "64",
            "BRAINSCAN_SESION_COOKIE_SECURE": "true",
            "BRAINSCAN_TEST_REDIS": "redis://x",
            "BRAINSCAN_SHARED_DATA": "/data",
        }
    )
    assert s.batch_size == 256  # the typo did not set it
    assert s.misspellings() == [
        ("BRAINSCAN_BATCHSIZE", "BRAINSCAN_BATCH_SIZE"),
        ("BRAINSCAN_SESION_COOKIE_SECURE", "BRAINSCAN_SESSION_COOKIE_SECURE"),
    ]


def test_every_command_warns_about_a_misspelt_variable(tmp_path: Path) -> None:
    from brainscan.cli import main as cli

    env = {"BRAINSCAN_DATA_DIR": str(tmp_path), "BRAINSCAN_ENV": "test", "BRAINSCAN_BATCHSIZE": "64"}
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert (
        "warning: BRAINSCAN_BATCHSIZE is not a brainscan setting and is ignored; "
        "did you mean BRAINSCAN_BATCH_SIZE?"
    ) in result.output
    bad = CliRunner().invoke(cli, ["db", "upgrade"], env={**env, "BRAINSCAN_SESSION_COOKIE_SECURE": "ture"})
    assert bad.exit_code == 1
    assert "BRAINSCAN_SESSION_COOKIE_SECURE='ture' is not valid: expected true or false" in bad.output


def test_the_app_factory_loading_settings_itself_logs_a_misspelt_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from api import create_app

    monkeypatch.setenv("BRAINSCAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BRAINSCAN_ENV", "test")
    monkeypatch.setenv("BRAINSCAN_THRESHHOLD", "0.3")
    with caplog.at_level(logging.WARNING, logger="api"):
        create_app()
    assert (
        "BRAINSCAN_THRESHHOLD is not a brainscan setting and is ignored; did you mean BRAINSCAN_THRESHOLD?"
    ) in caplog.text
