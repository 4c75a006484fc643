"""score_batch as a function: results, bad files, re-delivery, cancellation, giving up."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from brainscan.testing import Service
from db.batches import claim_batch, list_batches
from db.jobs import cancel_job, create_job
from db.progress import job_confusion_from_results
from db.results import list_results
from tests.conftest import SHIPPED_MODEL, load_bench
from tests.images import create_random_slice, encoded, save_image
from training.scorer import Scorer
from worker import scoring
from worker.scoring import OUTSIDE


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    from training.backend import import_backend

    import_backend()
    return Scorer.load(SHIPPED_MODEL)


def _planned(service: Service, folder: Path, scorer: Scorer, batch_size: int = 64) -> tuple[int, list[int]]:
    job_id, _ = service.create_job(
        folder, model_version=scorer.version, threshold=scorer.threshold, batch_size=batch_size
    )
    sent: list[int] = []
    service.plan(job_id, enqueue=sent.extend)
    return job_id, sent


def _mixed_folder(root: Path) -> Path:
    for i in range(3):
        save_image(root / "yes" / f"y{i}.png", create_random_slice(128, seed=i, lesion=True))
        save_image(root / "no" / f"n{i}.png", create_random_slice(128, seed=10 + i))
    (root / "no" / "empty.jpg").write_bytes(b"")
    (root / "no" / "text.jpg").write_text("this is not a JPEG")
    data = encoded(create_random_slice(128, seed=20))
    (root / "yes" / "cut.jpg").write_bytes(data[: len(data) // 3])
    (root / "no" / "ignored.txt").write_text("skipped at planning")
    return root


def test_a_batch_scores_good_images_and_records_bad_ones(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)
    outcome = embedded.score(batch_id, scorer=scorer, worker="h:1:t1")
    assert outcome == "done"
    job = embedded.job(job_id)
    assert job.status == "succeeded" and job.total == 9 and job.skipped == 1
    with embedded.sessions()() as session:
        rows = {r.relpath: r for r in list_results(session=session, job_id=job_id, limit=100)}
        errors = {r.relpath: r.error for r in rows.values() if r.status == "error"}
    assert errors.keys() == {"no/empty.jpg", "no/text.jpg", "yes/cut.jpg"}
    assert "empty" in errors["no/empty.jpg"] and "truncated" in errors["yes/cut.jpg"]
    # an empty file may be a copy in progress: a re-run tries it again; the others are no slice
    assert {path: rows[path].error_permanent for path in errors} == {
        "no/empty.jpg": False,
        "no/text.jpg": True,
        "yes/cut.jpg": True,
    }
    good = [r for r in rows.values() if r.status == "scored"]
    assert len(good) == 6 and all(len(r.content_hash or "") == 64 for r in good)
    assert all(r.flagged == (r.probability >= job.threshold) for r in good)
    assert (job.tp or 0) + (job.fp or 0) + (job.tn or 0) + (job.fn or 0) == 6


def test_scores_equal_the_scorer_called_directly(embedded: Service, tmp_path: Path, scorer: Scorer) -> None:
    folder = _mixed_folder(tmp_path / "src")
    job_id, (batch_id,) = _planned(embedded, folder, scorer)
    embedded.score(batch_id, scorer=scorer, worker="h:1:t")
    with embedded.sessions()() as session:
        stored = {
            r.relpath: r.probability
            for r in list_results(session=session, job_id=job_id, limit=100)
            if r.status == "scored"
        }
    direct = {
        Path(r.path).relative_to(folder).as_posix(): r.probability
        for r in scorer.score_paths(sorted(folder.rglob("*.png")))
    }
    assert stored.keys() == direct.keys()
    assert np.allclose([stored[k] for k in direct], list(direct.values()), atol=1e-6)


def test_a_redelivered_batch_changes_nothing(embedded: Service, tmp_path: Path, scorer: Scorer) -> None:
    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)
    assert embedded.score(batch_id, scorer=scorer, worker="h:1:a") == "done"
    with embedded.sessions()() as session:
        before = job_confusion_from_results(session=session, job_id=job_id)
    assert embedded.score(batch_id, scorer=scorer, worker="h:2:b") == "skipped"
    with embedded.sessions()() as session:
        assert job_confusion_from_results(session=session, job_id=job_id) == before
        assert len(list_results(session=session, job_id=job_id, limit=100)) == 9


class SlowScorer:
    """The shipped scorer, a few seconds slower per batch: each call sees whether the watchdog
    would take its batch back now."""

    def __init__(
        self, scorer: Scorer, service: Service, seconds: float, meanwhile: Callable[[], object] = lambda: None
    ) -> None:
        self.scorer, self.service, self.seconds, self.meanwhile = scorer, service, seconds, meanwhile
        self.version, self.lapsed_while_scoring = scorer.version, []

    def iter_scores(self, *args: object, **kwargs: object) -> object:
        from db.batches import lapsed_batches
        from db.models import utcnow

        self.meanwhile()
        time.sleep(self.seconds)
        with self.service.sessions()() as session:
            self.lapsed_while_scoring.extend(lapsed_batches(session=session, now=utcnow()))
        return self.scorer.iter_scores(*args, **kwargs)


def test_a_batch_slower_than_its_lease_keeps_it(embedded: Service, tmp_path: Path, scorer: Scorer) -> None:
    """The worker renews the lease while it scores: a batch that takes five leases to score is
    never lapsed in the watchdog's eyes, and is scored once."""
    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)
    slow = SlowScorer(scorer, embedded, seconds=3.0)
    assert embedded.score(batch_id, scorer=slow, worker="h:1:slow", lease=0.6) == "done"  # type: ignore[arg-type]
    assert slow.lapsed_while_scoring == []
    with embedded.sessions()() as session:
        (batch,) = list_batches(session=session, job_id=job_id)
    assert batch.attempts == 1 and embedded.job(job_id).status == "succeeded"


def test_a_batch_handed_back_while_it_is_scored_is_dropped_unwritten(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    """Its worker was shut down and handed the batch back: the pool process sees so at its next
    lease renewal, stops, and writes nothing; the next worker scores the batch as its first try."""
    from db.batches import hand_back_batches

    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)

    def shut_down() -> None:
        with embedded.sessions().begin() as session:
            assert hand_back_batches(session=session, holder_prefix="node@h:", because="shut down") == [
                batch_id
            ]

    slow = SlowScorer(scorer, embedded, seconds=1.0, meanwhile=shut_down)
    assert embedded.score(batch_id, scorer=slow, worker="node@h:1:t", lease=0.6) == "taken back"  # type: ignore[arg-type]
    with embedded.sessions()() as session:
        assert {r.status for r in list_results(session=session, job_id=job_id, limit=100)} == {"pending"}
    assert embedded.score(batch_id, scorer=scorer, worker="other@h:2:u") == "done"
    with embedded.sessions()() as session:
        (batch,) = list_batches(session=session, job_id=job_id)
    assert (batch.status, batch.attempts) == ("done", 1)


def test_a_worker_told_to_stop_hands_its_batch_back_between_two_images(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    from worker.scoring import SHUT_DOWN

    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)
    told: list[bool] = []
    slow = SlowScorer(scorer, embedded, seconds=0.1, meanwhile=lambda: told.append(True))
    outcome = scoring.score(
        batch_id,
        sessions=embedded.sessions(),
        scorer=slow,  # type: ignore[arg-type]
        worker="node@h:1:t",
        max_attempts=3,
        roots=embedded.settings.source_roots,
        stopping=lambda: bool(told),
    )
    assert outcome == "handed back"
    with embedded.sessions()() as session:
        (batch,) = list_batches(session=session, job_id=job_id)
        assert {r.status for r in list_results(session=session, job_id=job_id, limit=100)} == {"pending"}
    assert (batch.status, batch.attempts, batch.requeued_because) == ("queued", 0, SHUT_DOWN)


def test_cancelled_jobs_pending_batches_do_no_work(embedded: Service, tmp_path: Path, scorer: Scorer) -> None:
    job_id, batch_ids = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer, batch_size=3)
    with embedded.sessions().begin() as session:
        cancel_job(session=session, job_id=job_id)
    for batch_id in batch_ids:
        assert embedded.score(batch_id, scorer=scorer, worker="h:1:c") == "skipped"
    assert embedded.job(job_id).status == "cancelled"


def test_a_batch_that_keeps_losing_its_worker_fails_the_job(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    job_id, (batch_id,) = _planned(embedded, _mixed_folder(tmp_path / "src"), scorer)
    for attempt in range(3):  # three workers claim it and die without a word
        with embedded.sessions().begin() as session:
            assert claim_batch(session=session, batch_id=batch_id, worker=f"h:{attempt}:x") is not None
        with embedded.sessions().begin() as session:
            from db.batches import requeue_batch

            requeue_batch(session=session, batch_id=batch_id, because="test")
    outcome = embedded.score(batch_id, scorer=scorer, worker="h:9:y")
    assert outcome == "failed"
    job = embedded.job(job_id)
    assert job.status == "failed"
    assert job.error == "1 of 1 batches failed: gave up after 3 attempts (the worker was lost each time)"
    with embedded.sessions()() as session:
        (batch,) = list_batches(session=session, job_id=job_id)
    assert batch.status == "failed" and "gave up after 3 attempts" in (batch.error or "")


def test_a_worker_with_another_model_refuses_the_batch(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    folder = _mixed_folder(tmp_path / "src")
    with embedded.sessions().begin() as session:
        job, _ = create_job(
            session=session,
            source="src",
            source_kind="folder",
            source_path=str(folder),
            submitted_by="t",
            model_version="some-other-model",
            threshold=0.5,
            batch_size=64,
        )
        job_id = job.id
    sent: list[int] = []
    embedded.plan(job_id, enqueue=sent.extend)
    with pytest.raises(scoring.ModelMismatch, match="some-other-model"):
        embedded.score(sent[0], scorer=scorer, worker="h:1:z")


def test_paths_may_not_leave_the_source_folder(tmp_path: Path) -> None:
    root = tmp_path / "src"
    save_image(root / "a.png", create_random_slice(64))
    save_image(tmp_path / "outside.png", create_random_slice(64))
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    assert scoring.confined(root, "a.png") == root / "a.png"
    assert scoring.confined(root, "../outside.png") == "path leads outside the job's source folder"
    assert scoring.confined(root, "link.png") == "symbolic links are not followed"


def test_a_card_asking_for_preprocessing_this_code_lacks_is_refused(scorer: Scorer) -> None:
    import dataclasses

    from training.scorer import ModelError

    recipe = scorer.card.recipe
    card = dataclasses.replace(scorer.card, recipe={**recipe, "input": {**recipe["input"], "sharpen": 1.0}})
    with pytest.raises(ModelError, match=f"model card {card.version}: .*sharpen unknown"):
        Scorer(scorer.model, card)


def test_an_image_whose_name_is_not_utf8_is_scored_like_the_others(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    folder = tmp_path / "latin-1"
    save_image(
        Path(os.fsdecode(bytes(folder) + b"/yes/IRM-cr\xe2ne.png")),
        create_random_slice(128, seed=3, lesion=True),
    )
    save_image(folder / "no" / "plain.png", create_random_slice(128, seed=4))
    job_id, (batch_id,) = _planned(embedded, folder, scorer)
    assert embedded.score(batch_id, scorer=scorer, worker="h:1:u") == "done"
    job = embedded.job(job_id)
    assert job.status == "succeeded" and job.total == 2
    with embedded.sessions()() as session:
        rows = {r.relpath: r.status for r in list_results(session=session, job_id=job_id, limit=10)}
    assert rows == {"yes/IRM-cr\\xe2ne.png": "scored", "no/plain.png": "scored"}


def test_a_folder_swapped_for_a_link_outside_the_root_is_not_read(
    embedded: Service, tmp_path: Path, scorer: Scorer
) -> None:
    confined = Service({**embedded.env, "BRAINSCAN_ARCHIVE_ROOT": str(tmp_path / "archive")})
    ward = _mixed_folder(tmp_path / "archive" / "ward")
    job_id, (batch_id,) = _planned(confined, ward, scorer)
    shutil.move(ward, tmp_path / "elsewhere")
    ward.symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # same files, now outside the root
    assert confined.score(batch_id, scorer=scorer, worker="h:1:v") == "done"
    with confined.sessions()() as session:
        rows = list_results(session=session, job_id=job_id, limit=100)
    assert len(rows) == 9 and {r.error for r in rows} == {OUTSIDE}
    assert confined.job(job_id).status == "succeeded"  # finished, every image failed with the reason


def test_a_dicom_archive_scores_every_slice_and_frame_as_its_source_jpeg(
    embedded: Service, scorer: Scorer, tmp_path: Path, lgg_flair: Path
) -> None:
    """Each DICOM slice of the test archive, whatever its transfer syntax, and each frame of its
    multi-frame file, scores what its source JPEG scores (JPEG Baseline: within lossy noise)."""
    import pydicom

    archive = tmp_path / "pacs"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=3, seed=0)
    job_id = embedded.run_here(archive, scorer=scorer, batch_size=16)
    with embedded.sessions()() as session:
        rows = list_results(session=session, job_id=job_id, limit=1000)
    assert rows
    sources, lossy = [], []
    for r in rows:
        ds = pydicom.dcmread(archive / r.relpath, stop_before_pixels=True)
        number = r.instance_number
        if r.frame:
            frame = ds.PerFrameFunctionalGroupsSequence[r.frame - 1]
            number = int(frame.FrameContentSequence[0].FrameAcquisitionNumber)
        name = f"{ds.PatientID}_{ds.StudyDate}_{number}.jpg"
        sources.append(next(p for p in (lgg_flair / "yes" / name, lgg_flair / "no" / name) if p.is_file()))
        lossy.append(ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit)
    from_jpeg = scorer.score_paths(sources)
    assert [r.error for r in rows] == [s.error for s in from_jpeg]  # lgg-flair's two blank slices
    scored = np.array([r.error is None for r in rows])
    expected = np.array([s.probability or 0.0 for s in from_jpeg])
    found = np.array([r.probability or 0.0 for r in rows])
    exact = scored & ~np.array(lossy)
    np.testing.assert_allclose(found[exact], expected[exact], atol=1e-5)
    assert np.abs(found[scored] - expected[scored]).max() < 0.1


@pytest.mark.data
def test_each_dicom_series_is_flagged_at_its_site_s_threshold(
    embedded: Service, tmp_path: Path, scorer: Scorer, lgg_flair: Path
) -> None:
    """A job submitted without a threshold: the series of a site with a profile are flagged at the
    profile's threshold, the others at the job's; a job with its own threshold holds it everywhere."""
    import pydicom
    from sqlalchemy import select

    from db.models import ImageResult, Series
    from db.series import site_thresholds
    from db.sites import set_profile

    archive = tmp_path / "pacs"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=2, seed=0)
    moved = sorted({p.parent for p in archive.rglob("IM*")})[0]  # one series to another scanner
    for path in moved.glob("IM*"):
        ds = pydicom.dcmread(path)
        ds.StationName = "OTHERMR"
        ds.save_as(path)
    site = f"{pydicom.dcmread(next(moved.glob('IM*'))).Manufacturer} / OTHERMR"
    with embedded.sessions().begin() as session:
        profile = set_profile(
            session=session, site=site, model_version=scorer.version, threshold=0.999, actor="t", evidence={}
        )
    outcomes = {}
    for own in (False, True):  # own: the job was given its threshold
        job_id, _ = embedded.create_job(
            archive, model_version=scorer.version, threshold=0.01, batch_size=64, site_profiles=not own
        )
        sent: list[int] = []
        embedded.plan(job_id, enqueue=sent.extend)
        for batch_id in sent:
            embedded.score(batch_id, scorer=scorer, worker=f"h:1:{job_id}-{batch_id}")
        with embedded.sessions()() as session:
            rows = session.execute(
                select(Series.site, ImageResult.probability, ImageResult.flagged)
                .join(Series, Series.id == ImageResult.series_id)
                .where(ImageResult.job_id == job_id, ImageResult.status == "scored")
            ).all()
            outcomes[own] = (rows, site_thresholds(session=session, job_id=job_id))
    rows, sites = outcomes[False]
    assert sites == [{"site": site, "threshold": 0.999, "profile": profile.id, "series": 1}]
    assert {r.site for r in rows} >= {site} and len({r.site for r in rows}) == 2  # the archive mixes sites
    for r in rows:
        assert r.flagged == (r.probability >= (0.999 if r.site == site else 0.01)), r
    assert any(r.site == site and 0.01 <= r.probability < 0.999 for r in rows)  # the profile changed a flag
    rows, sites = outcomes[True]
    assert sites == [] and all(r.flagged == (r.probability >= 0.01) for r in rows)
