"""Thumbnails rendered outside the API process, in a small pool of memory-capped child processes.

A hostile file must not cost the API its memory: every decode already checks sizes first
(training.decode), and on top of that each preview process runs under an address-space cap, so
a decoder that still blows up fails or kills a child (replaced, the request answered 422), never
the server. Children are spawned, not forked, from the threaded server.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from training.decode import ImageError
from training.thumbnail import THUMBNAIL_SIDE, thumbnail_png

PREVIEW_PROCESSES = 2  # per API process; a job page asks for up to ~100 previews as they scroll in
MEMORY_CAP_BYTES = 1536 * 1024**2  # address space per preview process: ~4x the largest allowed decode
PREVIEW_TIMEOUT_S = 30


class ThumbnailError(Exception):
    """The image cannot be previewed; the message says why."""


def _cap_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class PreviewPool:
    """Preview processes, started on first use and replaced whole if one dies or hits its cap."""

    def __init__(self, *, processes: int = PREVIEW_PROCESSES, memory_cap: int = MEMORY_CAP_BYTES) -> None:
        self.processes, self.memory_cap = processes, memory_cap
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                spawn = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=spawn, initializer=_cap_memory, initargs=(self.memory_cap,)
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def render(self, path: Path, *, max_pixels: int, frame: int = 0, side: int = THUMBNAIL_SIDE) -> bytes:
        """The image (a frame of it, for a multi-frame file) as a grey PNG at most `side` pixels a
        side; ThumbnailError saying why when it cannot be made."""
        pool = self._executor()
        try:
            job = pool.submit(thumbnail_png, str(path), side=side, max_pixels=max_pixels, frame=frame)
            return job.result(PREVIEW_TIMEOUT_S)
        except ImageError as exc:
            raise ThumbnailError(exc.reason) from None
        except MemoryError:
            self._discard(pool)  # a process that hit its cap may hold a fragmented heap: start afresh
            raise ThumbnailError("the preview needs more memory than a preview may use") from None
        except BrokenProcessPool:
            self._discard(pool)
            raise ThumbnailError("the preview process died rendering it (out of memory?)") from None
        except FutureTimeout:
            raise ThumbnailError(f"the preview took longer than {PREVIEW_TIMEOUT_S} s") from None

    def close(self) -> None:
        """Stop the preview processes (a later render starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


previews = PreviewPool()  # one per API process
