"""Start a Celery worker for brainscan: the pool, its queues, and the watchdog in the main process."""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from brainscan.settings import Settings
from training.backend import threads_per_process
from worker.celery_app import WORKER_QUEUES, celery_for

log = logging.getLogger(__name__)
_watchdog: list[object] = []
_hand_backs: list[threading.Thread] = []


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
    queues: tuple[str, ...] = WORKER_QUEUES,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a worker until it is told to stop (SIGTERM: hand back the batches it holds, then exit)."""
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
    worker_shutting_down.connect(_hand_back, weak=False)
    worker_shutdown.connect(_wait_for_hand_back, weak=False)
    app.Worker(
        concurrency=processes,
        pool="prefork",
        queues=list(queues),
        loglevel=loglevel,
        # the node name starts every batch holder's name, and a worker shut down hands back the
        # batches held under it: several workers on one host need --hostname each (as Celery asks)
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


def _hand_back(sender: object = None, **_: object) -> None:
    """SIGTERM (a scale-down, a drained node, `brainscan up` stopping): the batches this worker's
    pool holds go back to the queue now, not when their leases lapse. Each pool process sees the
    shared stop flag between two images, stops and hands back its batch (worker/scoring.py), and
    takes no new one; the main process hands back whatever its pool holds too, for pool processes
    that were killed with it. In a thread: this runs inside the signal handler, which may have
    interrupted the main loop in the middle of a broker call."""
    from worker.process import start_stopping

    start_stopping()
    thread = threading.Thread(target=hand_back_now, args=(str(sender),), name="brainscan-hand-back")
    thread.start()
    _hand_backs.append(thread)


def hand_back_now(node: str) -> list[int]:
    """Re-queue and re-send every batch held by `node`'s pool processes; their ids."""
    from celery import current_app

    from db.batches import hand_back_batches
    from worker.enqueue import send_batches
    from worker.process import node_prefix, process_sessions
    from worker.scoring import SHUT_DOWN

    settings: Settings = current_app.conf.brainscan_settings
    try:
        sessions = process_sessions(settings)
        with sessions.begin() as session:
            ids = hand_back_batches(session=session, holder_prefix=node_prefix(node), because=SHUT_DOWN)
        send_batches(current_app, sessions, ids)
    except Exception:  # the database or broker is down too: the leases lapse and the watchdog acts
        log.exception("could not hand back this worker's batches; their leases will lapse")
        return []
    if ids:
        log.warning("shutting down: handed back batches %s", ids)
    return ids


def _wait_for_hand_back(**_: object) -> None:
    for thread in _hand_backs:
        thread.join(timeout=30)
