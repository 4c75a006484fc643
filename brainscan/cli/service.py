"""Service commands: `worker` (scale-out and GPU workers)."""

from __future__ import annotations

import click

from brainscan.cli.model import _settings


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 256),
              help="Pool processes (default: BRAINSCAN_WORKER_CONCURRENCY, else one per core).")
@click.option("--gpus", type=click.IntRange(0, 64),
              help="Run one process per GPU, each pinned to its own device, memory growth on.")
@click.option("--queues", default="brainscan.plan,brainscan.score", show_default=True,
              help="Comma-separated queues to consume (a GPU host may take only brainscan.score).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, gpus: int | None, queues: str, loglevel: str) -> None:
    """Run a Celery worker that plans jobs and scores batches (Ctrl-C finishes current batches)."""
    from worker.runner import run_worker

    settings = _settings().with_overrides(worker_concurrency=concurrency, worker_gpus=gpus)
    click.echo(f"brainscan worker: database {settings.resolved_database_url.split('@')[-1]}, "
               f"broker {settings.resolved_broker_url.split('@')[-1]}, model {settings.model_path}",
               err=True)
    run_worker(settings, queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
               loglevel=loglevel)


COMMANDS: list[click.Command] = [worker]
