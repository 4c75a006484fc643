"""Service commands: `up` (everything on one machine), `worker` (scale-out and GPU workers) and
`dicom-listener` (studies received over DICOM become jobs)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click

from brainscan.cli.context import cli_settings, private_files


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="Pool processes (default: BRAINSCAN_WORKER_CONCURRENCY, else one per core).",
)
@click.option(
    "--gpus",
    type=click.IntRange(0, 64),
    help="Run one process per GPU, each pinned to its own device, memory growth on.",
)
@click.option(
    "--queues",
    default="brainscan.plan,brainscan.stat,brainscan.score",
    show_default=True,
    help="Comma-separated queues to consume (a GPU host may take only brainscan.stat,brainscan.score).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, gpus: int | None, queues: str, loglevel: str) -> None:
    """Run a Celery worker that plans jobs and scores batches (Ctrl-C or SIGTERM: it hands back
    the batches it holds and exits)."""
    from worker.runner import run_worker

    private_files()
    settings = cli_settings().with_overrides(worker_concurrency=concurrency, worker_gpus=gpus)
    click.echo(
        f"brainscan worker: database {settings.resolved_database_url.split('@')[-1]}, "
        f"broker {settings.resolved_broker_url.split('@')[-1]}, model {settings.model_path}",
        err=True,
    )
    run_worker(settings, queues=tuple(q.strip() for q in queues.split(",") if q.strip()), loglevel=loglevel)


@click.command("dicom-listener")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port to listen on (default: BRAINSCAN_DICOM_PORT)."
)
def dicom_listener(port: int | None) -> None:
    """Receive studies over DICOM (C-ECHO, C-STORE) as BRAINSCAN_DICOM_AE_TITLE: each study becomes
    a job once no instance has come for BRAINSCAN_DICOM_STABLE_SECONDS. Callers: BRAINSCAN_DICOM_CALLERS
    (AE titles; empty: any) from BRAINSCAN_DICOM_ADDRESSES (default 127.0.0.1; "*": any)."""
    import threading

    from db.engine import get_sessionmaker
    from worker.celery_app import celery_for
    from worker.enqueue import submit_job
    from worker.receive import serve

    private_files()
    settings = cli_settings().with_overrides(dicom_port=port)
    if not settings.dicom_port:
        raise click.ClickException("no port: set BRAINSCAN_DICOM_PORT or give --port")
    app, stop = celery_for(settings), threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    callers = settings.dicom_callers or "any AE title"

    def ready(listening: int) -> None:
        click.echo(
            f"DICOM listener {settings.dicom_ae_title} on {settings.dicom_host}:{listening} "
            f"(callers: {callers}, from {settings.dicom_addresses}); studies go to {settings.received_dir}",
            err=True,
        )

    try:
        serve(
            settings,
            get_sessionmaker(settings.resolved_database_url),
            lambda j: submit_job(app, j),
            stop=stop,
            ready=ready,
        )
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.dicom_host}:{settings.dicom_port}: {exc.strerror or exc}"
        ) from exc
    click.echo("DICOM listener stopped", err=True)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Database, queue, uploads and logs (default: BRAINSCAN_DATA_DIR, else ./brainscan-data).",
)
@click.option(
    "--archive-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folders under it can be submitted by name (default: DATA_DIR/archive, created).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web view listens on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port the web view and API listen on.",
)
@click.option("--concurrency", type=click.IntRange(1, 256), help="Worker processes (default: one per core).")
def up(
    data_dir: Path | None, archive_root: Path | None, host: str, port: int, concurrency: int | None
) -> None:
    """Run brainscan on this machine: web view + API and a worker, on SQLite and a folder queue."""
    from brainscan import embedded
    from training.card import card_path_for

    private_files()
    settings = cli_settings().with_overrides(
        data_dir=data_dir, archive_root=archive_root, worker_concurrency=concurrency
    )
    if not card_path_for(settings.model_path).is_file():
        raise click.ClickException(
            f"no model at {settings.model_path} (with its .card.json beside it); "
            "set BRAINSCAN_MODEL_PATH or run brainscan train"
        )
    try:
        embedded.check_port_free(host, port)
        if settings.dicom_port:
            embedded.check_port_free(settings.dicom_host, settings.dicom_port)
        lock = embedded.claim_data_dir(settings.data_dir)
    except embedded.AlreadyServed as exc:
        raise click.ClickException(str(exc)) from exc
    banner = embedded.prepare(settings)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    command, env = embedded.brainscan_command(), embedded.child_env(settings)
    worker_args = ["worker"] + (["--concurrency", str(concurrency)] if concurrency else [])
    api = embedded.Child("api", [*command, "api", "--host", host, "--port", str(port)], env, logs / "api.log")
    work = embedded.Child("worker", [*command, *worker_args], env, logs / "worker.log")
    children = [api, work]
    if settings.dicom_port:  # studies sent over DICOM become jobs
        children.append(embedded.Child("dicom", [*command, "dicom-listener"], env, logs / "dicom.log"))
    stop = [False]

    def request_stop(*_: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        for child in children:
            child.start()
        embedded.wait_healthy(url, api)
        _print_banner(url, settings, banner, logs)
        embedded.supervise(children, stop)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        click.echo("stopping: the worker hands back the batches it holds", err=True)
        embedded.stop_all(children, timeout=12)
        os.close(lock)
        click.echo("stopped", err=True)


def _print_banner(url: str, settings: Any, banner: list[str], logs: Path) -> None:
    lines = [
        "",
        f"brainscan is running at {url}",
        "",
        *banner,
        f"data folder:   {settings.data_dir.resolve()} (SQLite database, queue, uploads)",
        f"archive root:  {settings.resolved_archive_root}",
        "               put a folder of images here, then submit it by name in the web view",
        *(
            [
                f"DICOM:         {settings.dicom_ae_title} on {settings.dicom_host}:{settings.dicom_port} "
                "(C-STORE a study: it becomes a job once no instance has come for "
                f"{settings.dicom_stable_seconds:g} s)"
            ]
            if settings.dicom_port
            else []
        ),
        f"logs:          {logs.resolve()}/api.log, worker.log{', dicom.log' if settings.dicom_port else ''}",
        "",
        "Ctrl-C stops everything; the next start reuses the data.",
        "",
    ]
    click.echo("\n".join(lines))


COMMANDS: list[click.Command] = [up, worker, dicom_listener]
