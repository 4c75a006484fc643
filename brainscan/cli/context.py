"""What every command starts from: the settings, or a clear error instead of a traceback."""

from __future__ import annotations

import os

import click

from brainscan.settings import Settings, SettingsError, load_settings


def private_files() -> None:
    """Files a service process creates are its owner's alone (umask 077): the database holds file
    names, which can name patients, the data folder a session key and first-run credentials."""
    os.umask(0o077)


def cli_settings() -> Settings:
    """Settings from BRAINSCAN_* variables; a bad value becomes a one-line error and exit 1, a
    misspelt variable name a warning."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in settings.misspelling_warnings():
        click.echo(f"warning: {line}", err=True)
    return settings
