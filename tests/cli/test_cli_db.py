"""`brainscan db`: migrate the database the settings name, from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from brainscan.cli import main
from db import migrate
from tests.db.test_migrations import HEAD


def test_brainscan_db_commands_migrate_the_settings_database(tmp_path: Path) -> None:
    env = {"BRAINSCAN_DATA_DIR": str(tmp_path / "data"), "BRAINSCAN_DATABASE_URL": ""}
    runner = CliRunner()
    upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert HEAD in upgraded.output and (tmp_path / "data" / "brainscan.db").is_file()
    assert runner.invoke(main, ["db", "current"], env=env).output.strip() == HEAD
    downgraded = runner.invoke(main, ["db", "downgrade", "base"], env=env)
    assert downgraded.exit_code == 0, downgraded.output
    assert runner.invoke(main, ["db", "current"], env=env).output.strip() == "none"


def test_brainscan_db_upgrade_works_from_any_directory(tmp_path: Path) -> None:
    env = {**os.environ, "BRAINSCAN_DATA_DIR": str(tmp_path / "data"), "BRAINSCAN_DATABASE_URL": ""}
    command = [sys.executable, "-c", "from brainscan.cli import main; main()", "db", "upgrade"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert migrate.current(f"sqlite:///{tmp_path / 'data' / 'brainscan.db'}") == HEAD
