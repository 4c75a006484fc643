"""Per-process resources of a worker: database sessions and the model, set up after fork.

The model is never loaded in the parent (TensorFlow is not fork-safe once initialised): each pool
process loads it in `worker_process_init`, pinned to its own GPU when the worker runs on GPUs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket

import numpy as np
from celery import current_app
from celery.signals import worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.engine import get_sessionmaker, reset_after_fork
from training.scorer import Scorer

log = logging.getLogger(__name__)
_scorer: Scorer | None = None
# one byte of memory shared with the pool processes forked after this import: the main process
# sets it when the worker is told to stop, and each pool process then hands its batch back
_stopping = multiprocessing.get_context("fork").RawValue("b", 0)


def start_stopping() -> None:
    """Called in the main process on SIGTERM (safe in a signal handler: one byte is written)."""
    _stopping.value = 1


def stopping() -> bool:
    """True in every pool process once its worker was told to stop."""
    return bool(_stopping.value)


def worker_name(task_id: str, node: str | None = None) -> str:
    """Who holds a batch: the worker's Celery node name (which names its host), the pool process
    and the task id (a retry of the same task keeps it). A worker that is shut down hands back
    the batches whose holder starts with its node name (`node_prefix`)."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{task_id}"


def node_prefix(node: str) -> str:
    """What every holder name of this worker's pool processes starts with."""
    return f"{node}:"


def process_sessions(settings: Settings) -> sessionmaker[Session]:
    return get_sessionmaker(settings.resolved_database_url)


def gpu_for_process(index: int, gpus: int) -> str | None:
    """CUDA_VISIBLE_DEVICES for the pool process with this index: one GPU per process."""
    return str(index % gpus) if gpus > 0 else None


def process_scorer(settings: Settings) -> Scorer:
    """This process's Scorer, loaded on first use (or at start-up by `_after_fork`)."""
    global _scorer
    if _scorer is None:
        from training.backend import import_backend, one_blas_thread, serve_from_heap

        import_backend(threads=settings.model_threads or None, gpu_memory_growth=True)
        serve_from_heap()
        one_blas_thread()
        _scorer = Scorer.load(
            settings.model_path, threads=settings.decode_threads, max_pixels=settings.max_image_pixels
        )
        size = _scorer.spec.size
        _scorer.score_arrays(np.zeros((1, size, size, 1), np.uint8))  # build the graph now
        log.info("process %s loaded model %s", os.getpid(), _scorer.version)
    return _scorer


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    settings: Settings | None = getattr(current_app.conf, "brainscan_settings", None)
    if settings is None:
        return
    reset_after_fork()
    from billiard.process import current_process

    device = gpu_for_process(current_process().index, settings.worker_gpus)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device  # before TensorFlow first looks for GPUs
    process_scorer(settings)
