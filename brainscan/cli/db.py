"""Database commands: `db upgrade`, `db downgrade`, `db current` (the URL comes from BRAINSCAN_* settings)."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from brainscan.cli.context import cli_settings, private_files


def _database_url() -> str:
    return cli_settings().resolved_database_url


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@click.group("db")
def db() -> None:
    """Create and migrate the database (BRAINSCAN_DATABASE_URL, else SQLite under BRAINSCAN_DATA_DIR)."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from db import migrate

    private_files()  # a new SQLite database holds file names, which can name patients
    url = _database_url()
    migrate.upgrade(url, revision)
    click.echo(f"{_shown(url)} is at revision {migrate.current(url)}")


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' removes every table)."""
    from db import migrate

    url = _database_url()
    migrate.downgrade(url, revision)
    click.echo(f"{_shown(url)} is at revision {migrate.current(url) or 'base'}")


@db.command()
def current() -> None:
    """Print the revision the database is at ('none' if it was never migrated)."""
    from db import migrate

    click.echo(migrate.current(_database_url()) or "none")


COMMANDS = [db]
