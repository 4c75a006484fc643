"""An app's settings on a real migrated database, with a real archive root of synthetic slices.

Loaded for the whole suite from tests/conftest.py: tests/api uses them for the Flask app, tests/cli
for `brainscan` commands against the same database. `db_url` is SQLite; a module may override it
(with `database_url`, for both dialects).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.engine import get_sessionmaker
from db.model_versions import register_model_version
from tests.conftest import SHIPPED_MODEL
from tests.images import create_random_slice, save_image


@pytest.fixture
def db_url(sqlite_database_url: str) -> str:
    """The database the app uses (a module may override it with `database_url` for both dialects)."""
    return sqlite_database_url


def make_archive(root: Path, *, count: int = 6) -> Path:
    """ward-1/{yes,no}/*.png of synthetic slices (half with a lesion), plus a non-image file."""
    for i in range(count):
        label = "yes" if i % 2 else "no"
        slice_ = create_random_slice(96, seed=i, lesion=i % 2 == 1)
        save_image(root / "ward-1" / label / f"slice-{i:02d}.png", slice_)
    (root / "ward-1" / "notes.txt").write_text("not an image")
    (root / "empty-ward").mkdir(parents=True)
    return root


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings for one test: its own data folder (uploads, broker files) and archive root."""
    root = make_archive(tmp_path / "archive")
    outside = tmp_path / "outside"
    save_image(outside / "secret.png", create_random_slice(64, seed=99))
    (root / "escape").symlink_to(outside, target_is_directory=True)  # a link leading out of the root
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        database_url=db_url,
        archive_root=root,
        model_path=SHIPPED_MODEL,
        batch_size=4,
        max_archive_files=20,
        max_archive_bytes=2_000_000,
        max_compression_ratio=50.0,
        max_upload_bytes=3_000_000,
    )


@pytest.fixture
def sessions(api_settings: Settings) -> sessionmaker[Session]:
    """Sessions on the test's database."""
    return get_sessionmaker(api_settings.resolved_database_url)


def card() -> dict[str, object]:
    """The shipped model's card."""
    loaded: dict[str, object] = json.loads(SHIPPED_MODEL.with_suffix(".card.json").read_text())
    return loaded


@pytest.fixture
def model(sessions: sessionmaker[Session]) -> dict[str, object]:
    """The shipped model registered as current, as a starting worker does; returns its card."""
    shipped = card()
    with sessions.begin() as session:
        register_model_version(
            session=session,
            version=str(shipped["version"]),
            file=str(SHIPPED_MODEL),
            sha256="0" * 64,
            threshold=float(shipped["threshold"]),  # type: ignore[arg-type]
            metrics=shipped["metrics"],
            card=shipped,
        )  # type: ignore[arg-type]
    return shipped
