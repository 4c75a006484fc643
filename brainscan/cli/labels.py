"""`brainscan labels export`: radiologists' verdicts as a labels.csv that `brainscan train` reads."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from brainscan.cli.context import cli_settings


@click.group()
def labels() -> None:
    """Labels from radiologists' reviews."""


@labels.command("export")
@click.argument("job_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
def export(job_id: int, out: Path | None) -> None:
    """Write the job's reviewed images as labels.csv rows (path,label: 1 tumour, 0 none), paths
    relative to the job's folder: put the file there and `brainscan train` reads the verdicts.
    "Unsure" verdicts and frames of multi-frame files (training reads whole files) are left out."""
    from db.engine import get_sessionmaker
    from db.jobs import get_job
    from db.reviews import reviewed_labels

    with get_sessionmaker(cli_settings().resolved_database_url)() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            raise click.ClickException(f"there is no job {job_id}")
        rows = reviewed_labels(session=session, job_id=job_id)
        source = job.source_path
    kept = [
        (path, 1 if verdict == "tumour" else 0)
        for path, frame, verdict in rows
        if verdict != "unsure" and not frame
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(("path", "label"))
    writer.writerows(kept)
    if out is None:
        click.echo(buffer.getvalue(), nl=False)
    else:
        out.write_text(buffer.getvalue())
    left = len(rows) - len(kept)
    click.echo(
        f"{len(kept)} labels from job {job_id} ({source}); {left} left out (unsure, or frames)", err=True
    )


COMMANDS = [labels]
