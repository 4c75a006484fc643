"""Start a Celery worker for brainscan: the pool, its queues, and the watchdog in the main process."""

from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_ready, worker_shutdown

from brainscan.settings import Settings
from training.backend import threads_per_process
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE, celery_for

log = logging.getLogger(__name__)
_watchdog: list[object] = []


def pool_size(settings: Settings) -> int:
    """Processes in the pool: one per GPU on a GPU worker, else the setting or one per core."""
    if settings.worker_gpus > 0:
        return settings.worker_gpus
    return settings.worker_concurrency or os.cpu_count() or 1


def model_threads(settings: Settings, processes: int) -> int:
    """TensorFlow threads per process so that the pool together uses each core once."""
    return settings.model_threads or threads_per_process(processes)


def register_model(settings: Settings) -> str:
    """Record this worker's model (from its card) as the current one; returns its version."""
    from db.model_versions import register_model_version
    from training.card import ModelCard, card_path_for
    from worker.process import process_sessions

    card = ModelCard.load(card_path_for(settings.model_path))
    with process_sessions(settings).begin() as session:
        register_model_version(
            session=session,
            version=card.version,
            file=str(settings.model_path),
            sha256=card.model_sha256,
            threshold=card.threshold,
            metrics=card.metrics,
            card=card.to_dict(),
        )
    return card.version


def run_worker(
    settings: Settings,
    *,
    queues: tuple[str, ...] = (PLAN_QUEUE, SCORE_QUEUE),
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a worker until it is told to stop (SIGTERM: finish the current batches, then exit)."""
    processes = pool_size(settings)
    settings = settings.with_overrides(model_threads=model_threads(settings, processes))
    app = celery_for(settings)
    version = register_model(settings)
    log.info("worker model %s, %d processes, queues %s", version, processes, ",".join(queues))
    import worker.process  # noqa: F401, RUF100  (connects the after-fork set-up)
    import worker.tasks  # noqa: F401  (registers the tasks)

    if settings.watchdog_interval > 0:
        worker_ready.connect(_start_watchdog, weak=False)
        worker_shutdown.connect(_stop_watchdog, weak=False)
    app.Worker(
        concurrency=processes,
        pool="prefork",
        queues=list(queues),
        loglevel=loglevel,
        hostname=hostname or f"brainscan@{socket.gethostname()}",
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
    ).start()


def _start_watchdog(sender: object = None, **_: object) -> None:
    from celery import current_app

    from worker.process import process_sessions
    from worker.watchdog import Watchdog

    settings: Settings = current_app.conf.brainscan_settings
    dog = Watchdog(app=current_app, sessions=process_sessions(settings), settings=settings)
    dog.start()
    _watchdog.append(dog)
    log.info("watchdog started: every %ss", settings.watchdog_interval)


def _stop_watchdog(**_: object) -> None:
    for dog in _watchdog:
        dog.stop()  # type: ignore[attr-defined]
