"""The Celery app: the time limits a worker enforces are those of its settings, set in one place."""

from __future__ import annotations

from pathlib import Path

from celery import Celery

import worker.tasks  # noqa: F401  (registers the tasks with every app, as a worker does)
from brainscan.settings import Settings
from brainscan.testing import FAST_TIMINGS, Service
from worker.celery_app import PLAN_TASK, PLAN_TIME_LIMIT, SCORE_TASK, make_celery


def limits(app: Celery, task: str) -> tuple[object, object]:
    """(soft, hard) time limit of the task as this app's worker applies them."""
    return app.tasks[task].soft_time_limit, app.tasks[task].time_limit


def test_a_worker_made_from_settings_gives_its_tasks_their_time_limits(embedded: Service) -> None:
    app = make_celery(embedded.settings)  # what `brainscan worker` runs, from the same environment
    soft, hard = (
        int(FAST_TIMINGS["BRAINSCAN_BATCH_SOFT_TIME_LIMIT"]),
        int(FAST_TIMINGS["BRAINSCAN_BATCH_TIME_LIMIT"]),
    )
    assert limits(app, SCORE_TASK) == (soft, hard)
    assert limits(app, PLAN_TASK) == (PLAN_TIME_LIMIT, PLAN_TIME_LIMIT + 60)


def test_each_app_has_its_own_settings_limits_and_the_tasks_carry_none(tmp_path: Path) -> None:
    default = make_celery(Settings(data_dir=tmp_path / "default"))
    longer = make_celery(
        Settings(data_dir=tmp_path / "longer", batch_soft_time_limit=1200, batch_time_limit=1300)
    )
    assert limits(default, SCORE_TASK) == (600, 660)
    assert limits(longer, SCORE_TASK) == (1200, 1300)
    bare = Celery("bare", set_as_current=False)  # no annotations: what the task decorators set
    assert limits(bare, SCORE_TASK) == (None, None)
    assert limits(bare, PLAN_TASK) == (None, None)


def test_scale_out_workers_send_task_events_for_flower_and_embedded_ones_do_not(
    embedded: Service, scaleout: Service
) -> None:
    on_redis = make_celery(scaleout.settings).conf
    assert on_redis.worker_send_task_events and on_redis.task_send_sent_event
    on_files = make_celery(embedded.settings).conf
    assert not on_files.worker_send_task_events and not on_files.task_send_sent_event
