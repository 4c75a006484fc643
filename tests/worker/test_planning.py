"""plan_job as a function: streaming walk, batches, labels, skipped files, cancellation."""

from __future__ import annotations

import os
from pathlib import Path

from brainscan.testing import Service
from db.batches import list_batches
from db.jobs import cancel_job
from db.results import list_results
from tests.conftest import load_bench
from tests.images import create_random_slice, save_image
from training.dataset import file_at


def _job(service: Service, folder: Path, batch_size: int = 4) -> int:
    return service.create_job(folder, model_version="m", threshold=0.5, batch_size=batch_size)[0]


def _folder(root: Path, n_yes: int = 5, n_no: int = 4) -> Path:
    for i in range(n_yes):
        save_image(root / "yes" / f"Y ({i}).png", create_random_slice(48, seed=i))
    for i in range(n_no):
        save_image(root / "no" / f"N{i}.jpg", create_random_slice(48, seed=50 + i))
    (root / "no" / "notes.txt").write_text("not an image")
    (root / "README").write_text("plain text without a suffix")
    return root


def test_plan_cuts_batches_and_enqueues_each_after_commit(embedded: Service, tmp_path: Path) -> None:
    job_id = _job(embedded, _folder(tmp_path / "src"))
    sent: list[int] = []
    total = embedded.plan(job_id, enqueue=sent.extend)
    assert total == 9
    with embedded.sessions()() as session:
        batches = list_batches(session=session, job_id=job_id)
        assert [b.size for b in batches] == [4, 4, 1] and sent == [b.id for b in batches]
        rows = list_results(session=session, job_id=job_id, limit=100)
        labels = {r.relpath: r.label for r in rows}
    assert labels["yes/Y (0).png"] == 1 and labels["no/N0.jpg"] == 0 and len(labels) == 9
    job = embedded.job(job_id)
    assert job.status == "running" and job.total == 9 and job.skipped == 2


def test_missing_source_fails_the_job_with_the_reason(embedded: Service, tmp_path: Path) -> None:
    job_id = _job(embedded, tmp_path / "gone")
    assert embedded.plan(job_id, enqueue=lambda ids: None) == 0
    job = embedded.job(job_id)
    assert job.status == "failed" and "source folder not found" in (job.error or "")


def test_a_folder_without_images_fails_saying_what_it_held(embedded: Service, tmp_path: Path) -> None:
    """A mistyped export folder must not look like a clean screening (issue 39)."""
    (tmp_path / "empty").mkdir()
    job_id = _job(embedded, tmp_path / "empty")
    embedded.plan(job_id, enqueue=lambda ids: None)
    job = embedded.job(job_id)
    assert (job.status, job.total) == ("failed", 0) and "holds no files" in (job.error or "")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    job_id = _job(embedded, tmp_path / "notes")
    embedded.plan(job_id, enqueue=lambda ids: None)
    job = embedded.job(job_id)
    assert job.status == "failed" and "only other files (1 not an image file (by its name))" in (
        job.error or ""
    )


def test_a_cancelled_job_is_not_planned(embedded: Service, tmp_path: Path) -> None:
    job_id = _job(embedded, _folder(tmp_path / "src"))
    with embedded.sessions().begin() as session:
        cancel_job(session=session, job_id=job_id)
    sent: list[int] = []
    assert embedded.plan(job_id, enqueue=sent.extend) == 0
    assert sent == [] and embedded.job(job_id).status == "cancelled"


def test_replanning_after_a_lost_planner_starts_afresh(embedded: Service, tmp_path: Path) -> None:
    job_id = _job(embedded, _folder(tmp_path / "src"))
    embedded.plan(job_id, enqueue=lambda ids: None)
    with embedded.sessions().begin() as session:  # as if the planner died before finishing
        from sqlalchemy import update

        from db.models import Job

        session.execute(update(Job).where(Job.id == job_id).values(status="planning"))
    assert embedded.plan(job_id, enqueue=lambda ids: None) == 9
    with embedded.sessions()() as session:
        assert len(list_results(session=session, job_id=job_id, limit=100)) == 9


def test_file_names_that_are_not_utf8_are_planned_escaped_and_found_again(
    embedded: Service, tmp_path: Path
) -> None:
    """One Latin-1 name used to fail the whole job (PostgreSQL refuses the text)."""
    folder = _folder(tmp_path / "src")
    for raw in (b"/scan-\xff.png", b"/a\\b-\xe9.png"):  # the second also holds a real backslash
        save_image(Path(os.fsdecode(bytes(folder / "yes") + raw)), create_random_slice(48, seed=9))
    job_id = _job(embedded, folder, batch_size=100)
    assert embedded.plan(job_id, enqueue=lambda ids: None) == 11
    with embedded.sessions()() as session:
        rows = {r.relpath: r for r in list_results(session=session, job_id=job_id, limit=100)}
    assert {"yes/scan-\\xff.png", "yes/a\\\\b-\\xe9.png"} <= set(rows)
    assert rows["yes/scan-\\xff.png"].status == "pending" and rows["yes/scan-\\xff.png"].label == 1
    for stored in ("yes/scan-\\xff.png", "yes/a\\\\b-\\xe9.png", "yes/Y (0).png"):
        assert file_at(folder, stored).is_file(), stored


def test_a_folder_that_now_leads_outside_the_archive_root_is_not_walked(
    embedded: Service, tmp_path: Path
) -> None:
    confined = Service({**embedded.env, "BRAINSCAN_ARCHIVE_ROOT": str(tmp_path / "archive")})
    outside = _folder(tmp_path / "elsewhere")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "ward").symlink_to(outside, target_is_directory=True)  # swapped after submit
    job_id = _job(confined, tmp_path / "archive" / "ward")
    assert confined.plan(job_id, enqueue=lambda ids: None) == 0
    job = confined.job(job_id)
    assert job.status == "failed" and "leads outside the archive root" in (job.error or "")
    assert job.total == 0


def test_a_dicom_archive_is_planned_by_series_and_frame_and_keeps_no_identifier(
    embedded: Service, tmp_path: Path, lgg_flair: Path
) -> None:
    """The DICOM test archive (bench/dicom_archive.py): every slice planned once, in its series,
    with its InstanceNumber; the multi-frame file as one image per frame; the report, the
    presentation state and the DICOMDIR skipped with their reasons; no patient name, birth date
    or PatientID anywhere in the database."""
    from sqlalchemy import select

    from db.models import Job, Series

    archive = tmp_path / "pacs"
    summary = load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=3, seed=0)
    job_id = _job(embedded, archive, batch_size=16)
    assert embedded.plan(job_id, enqueue=lambda ids: None) == summary.frames
    with embedded.sessions()() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.skipped == 3
        assert job.skipped_reasons == {
            "DICOMDIR (a directory of the other files)": 1,
            "not an image: Basic Text SR Storage": 1,
            "not an image: Grayscale Softcopy Presentation State Storage": 1,
        }
        series = list(session.scalars(select(Series).where(Series.job_id == job_id)))
        rows = list_results(session=session, job_id=job_id, limit=1000)
    assert len({s.study_key for s in series}) == summary.studies == 3
    assert {(s.description, s.modality, s.plane, s.dicom) for s in series} == {
        ("AX FLAIR", "MR", "axial", True)
    }
    assert all(s.patient_key and len(s.patient_key) == 16 for s in series)
    assert len({s.patient_key for s in series}) == 3
    multi = [r for r in rows if r.frame > 0]
    assert len({r.relpath for r in multi}) == 1 and sorted(r.frame for r in multi) == list(
        range(1, len(multi) + 1)
    )
    assert all(r.series_id is not None and r.label is not None for r in rows)
    assert all(r.instance_number is not None for r in rows if r.frame == 0)
    dump = "\n".join(_database_text(embedded))
    assert "AX FLAIR" in dump  # the dump holds what was stored
    for identifier in _identifiers(archive):
        assert identifier not in dump


def _identifiers(archive: Path) -> set[str]:
    """The patient names, birth dates and IDs written into the archive's headers."""
    import pydicom

    found = set()
    for path in archive.rglob("*"):
        if path.is_file() and path.name not in ("DICOMDIR", "labels.csv"):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found |= {str(ds.PatientName), ds.PatientName.family_name, ds.PatientBirthDate, ds.PatientID}
    assert len(found) >= 10  # three patients' four identifiers (two may share a family name)
    return found


def _database_text(service: Service) -> list[str]:
    """Every value of every row of every table, as text."""
    from sqlalchemy import inspect, text

    engine = service.sessions().kw["bind"]
    with engine.connect() as connection:
        return [
            str(value)
            for table in inspect(engine).get_table_names()
            for row in connection.execute(text(f'SELECT * FROM "{table}"'))
            for value in row
        ]
