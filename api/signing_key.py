"""The key that signs web sessions: BRAINSCAN_SECRET_KEY, or one made at random on first start.

There is no built-in key: a key in the source would let anyone who reads it sign a session as
any user. A made key lives in the data folder (mode 0600), so restarts keep sessions valid and
every API process of one instance signs alike.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from brainscan.settings import MIN_SECRET_LENGTH, Settings, SettingsError

KEY_BYTES = 32  # 256 random bits, written as 64 hex characters


def session_signing_key(settings: Settings) -> str:
    """The configured key, else the data folder's own (created on first use, atomically)."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.secret_key_file
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        os.link(draft, path)  # atomic and never overwrites: of processes starting together, one key wins
    except FileExistsError:
        pass
    finally:
        draft.unlink()


def _read(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        raise SettingsError(
            f"{path} signs web sessions and must be readable only by its owner: chmod 600 {path}"
        )
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise SettingsError(
            f"{path} holds no usable session key: delete it and a new one is made (every web login then ends)"
        )
    return key
