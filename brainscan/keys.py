"""Secrets an instance keeps: the key that signs web sessions and the key that hashes PatientIDs.

Each is its setting (BRAINSCAN_SECRET_KEY, BRAINSCAN_PATIENT_KEY) or, unset, one made at random on
first use. There is no built-in key: a key in the source would let anyone who reads it sign a
session as any user, or hash a guessed PatientID and find that patient's studies. A made key lives
in the data folder (mode 0600), so restarts keep sessions valid and every process of one instance
signs and hashes alike.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from brainscan.settings import MIN_SECRET_LENGTH, Settings, SettingsError

KEY_BYTES = 32  # 256 random bits, written as 64 hex characters


def session_signing_key(settings: Settings) -> str:
    """The configured key, else the data folder's own (created on first use, atomically)."""
    return settings.secret_key or _made_key(
        settings.secret_key_file, "signs web sessions", "every web login then ends"
    )


def patient_hash_key(settings: Settings) -> bytes:
    """The key of `training.dicom_header.patient_key`: the configured one, else the data folder's.
    Changing it changes every patient's hash from then on (studies of one patient planned before
    and after no longer link)."""
    key = settings.patient_key or _made_key(
        settings.patient_key_file, "keys the hashes of PatientIDs", "patients' hashes then change"
    )
    return key.encode()


def _made_key(path: Path, purpose: str, consequence: str) -> str:
    if not path.exists():
        _create(path)
    return _read(path, purpose, consequence)


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


def _read(path: Path, purpose: str, consequence: str) -> str:
    if path.stat().st_mode & 0o077:
        raise SettingsError(f"{path} {purpose} and must be readable only by its owner: chmod 600 {path}")
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise SettingsError(f"{path} holds no usable key: delete it and a new one is made ({consequence})")
    return key
