"""The Celery app, configured from the one settings object: Redis in scale-out, files when embedded.

Delivery guarantees: late acknowledgement, re-queue when a pool process dies, one message per
process at a time, JSON only. What a transport cannot keep (kombu's filesystem transport drops a
message its consumer had fetched if the whole worker is SIGKILLed; Redis drops everything on a
restart without persistence) the watchdog (worker/watchdog.py) finds in SQL and sends again.
"""

from __future__ import annotations

import functools

from celery import Celery

from brainscan.settings import Settings
from worker.redis_transport import TRANSPORT as REDIS_TRANSPORT

PLAN_QUEUE = "brainscan.plan"
SCORE_QUEUE = "brainscan.score"
STAT_QUEUE = "brainscan.stat"  # batches of `stat` jobs: taken as often as routine ones, so not after them
WORKER_QUEUES = (PLAN_QUEUE, STAT_QUEUE, SCORE_QUEUE)
PLAN_TASK = "brainscan.plan_job"
SCORE_TASK = "brainscan.score_batch"
PLAN_TIME_LIMIT = 6 * 3600  # walking a million-file archive takes minutes; this bounds a hang


def broker_options(settings: Settings) -> dict[str, object]:
    """Transport options: folders for the filesystem transport, visibility timeout for Redis."""
    if settings.embedded_broker:
        queue, processed, control = (settings.broker_dir / name for name in ("queue", "processed", "control"))
        for folder in (queue, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "store_processed": False,
            "control_folder": str(control),  # kombu's default is ./control, wherever cwd is
            "polling_interval": 0.2,
        }
    return {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 15,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings; tasks are registered by importing worker.tasks."""
    app = Celery("brainscan", broker=settings.resolved_broker_url, include=["worker.tasks"])
    url = settings.resolved_broker_url
    on_redis = url.startswith(("redis://", "rediss://"))
    app.conf.update(
        broker_transport=REDIS_TRANSPORT if on_redis else None,
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # keep trying while Redis restarts
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # outcomes live in SQL, never in a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # a batch running when the broker goes away finishes its (idempotent) work; killing it would
        # also replace the pool process, which then reloads the model
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_proc_alive_timeout=180,  # a new pool process loads TensorFlow and the model first
        task_routes={PLAN_TASK: {"queue": PLAN_QUEUE}, SCORE_TASK: {"queue": SCORE_QUEUE}},
        # the tasks' time limits, set here only (worker/tasks.py's decorators carry none): Celery
        # applies them to the tasks of this app, so a worker enforces its own settings' limits
        task_annotations={
            SCORE_TASK: {
                "soft_time_limit": settings.batch_soft_time_limit,
                "time_limit": settings.batch_time_limit,
            },
            PLAN_TASK: {"soft_time_limit": PLAN_TIME_LIMIT, "time_limit": PLAN_TIME_LIMIT + 60},
        },
        task_default_queue=SCORE_QUEUE,
        worker_hijack_root_logger=False,
        # task events for Flower (`celery flower`, docs/operations.md) on Redis; the embedded
        # filesystem transport has no fanout exchange to publish them on
        worker_send_task_events=on_redis,
        task_send_sent_event=on_redis,
        broker_pool_limit=4,
    )
    app.conf.brainscan_settings = settings
    return app


def settings_of(app: Celery) -> Settings:
    """The Settings an app was made from."""
    settings: Settings = app.conf.brainscan_settings
    return settings


@functools.cache
def celery_for(settings: Settings) -> Celery:
    """The one app per settings in this process (the API and the worker each make theirs)."""
    app = make_celery(settings)
    app.set_default()
    return app
