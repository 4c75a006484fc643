"""What the disk quota counts (BRAINSCAN_DISK_QUOTA_GB): the bytes under the upload, received and
DICOMweb folders, walked without following links. worker/retention.py deletes finished jobs' folders to fit
it; the listener and the API refuse new files while it is full (`QuotaGauge`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from brainscan.settings import Settings


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links not followed); 0 when it is missing."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # deleted while we looked
    return total


def kept_bytes(settings: Settings) -> int:
    """What the disk quota counts: the upload, received and DICOMweb folders."""
    return sum(folder_bytes(f) for f in (settings.upload_dir, settings.received_dir, settings.pulled_dir))


class QuotaGauge:
    """Whether the quota is full, for a process that writes into the folders (the listener, the
    API): a walk of the folders at most every `every` seconds, plus what it wrote since."""

    def __init__(self, settings: Settings, every: float = 10.0) -> None:
        self.settings, self.every = settings, every
        self.used, self.measured_at = 0, float("-inf")
        self.lock = threading.Lock()

    def full(self, adding: int = 0) -> bool:
        """True when `adding` more bytes would go over the quota (never without one)."""
        quota = self.settings.disk_quota_bytes
        if not quota:
            return False
        with self.lock:
            if time.monotonic() - self.measured_at > self.every:
                self.used, self.measured_at = kept_bytes(self.settings), time.monotonic()
            return self.used + adding > quota

    def wrote(self, size: int) -> None:
        with self.lock:
            self.used += size
