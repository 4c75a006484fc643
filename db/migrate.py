"""Alembic, configured in code: `upgrade`, `downgrade` and `current` work from any directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

import migrations
from db.engine import make_engine

# __path__ rather than __file__: an editable install may present the folder as a namespace package
MIGRATIONS_DIR = next(Path(p) for p in migrations.__path__ if (Path(p) / "env.py").is_file())


def alembic_config(url: str) -> Config:
    """An Alembic Config for the database at `url` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url  # attributes, not options: a URL may hold % signs
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ('base' empties it)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database at `url` is at, or None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
