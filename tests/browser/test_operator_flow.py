"""An operator's day in headless Chromium against a real embedded service.

The service is what `brainscan up` runs: SQLite and kombu's filesystem queue under a data folder,
`brainscan worker` scoring with the shipped model, `brainscan api` (gunicorn) serving the app. The
operator logs in, submits seed-253 (a copy of ../shared/data/seed-253 in a temporary archive root)
through the form, watches the bar reach 100 %, checks the confusion matrix against `brainscan
evaluate`, and downloads the CSV; then submits the DICOM test archive (bench/dicom_archive.py) and
reads its studies. Screenshots of every page land in artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import BRAINSCAN, Service, StoreSCP, WorkerProcess, wait_for
from tests.browser.conftest import PASSWORD, embedded_api, require_chromium, shot
from tests.conftest import SHIPPED_MODEL, load_bench

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.data]
SCOPES = ("read", "submit", "review")  # the operator also reviews
JOB_TIMEOUT_MS = 150_000
MATRIX = ("tp", "fp", "tn", "fn")


@dataclass
class LiveService:
    url: str
    evaluated: dict[str, Any]  # `brainscan evaluate seed-253 --json`
    pacs: StoreSCP  # the destination `pacs` the DICOM studies' results are sent to


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[LiveService]:
    """Migrated database, an operator account, one worker and the gunicorn API, all real processes."""
    require_chromium()
    base = tmp_path_factory.mktemp("browser")
    pacs = StoreSCP()
    archive_root = base / "archive"
    shutil.copytree(shared_data / "seed-253", archive_root / "seed-253")
    load_bench("dicom_archive").build_archive(shared_data / "lgg-flair", archive_root / "pacs", patients=3)
    env = {
        "BRAINSCAN_ENV": "test",
        "BRAINSCAN_DATA_DIR": str(base / "data"),
        "BRAINSCAN_ARCHIVE_ROOT": str(archive_root),
        "BRAINSCAN_MODEL_PATH": str(SHIPPED_MODEL),
        "BRAINSCAN_DATABASE_URL": "",
        "BRAINSCAN_BROKER_URL": "",
        "BRAINSCAN_DICOM_DESTINATIONS": f"pacs=dicom://STORESCP@127.0.0.1:{pacs.port}",
        "BRAINSCAN_WATCHDOG_INTERVAL": "1",
    }  # the embedded defaults, and a PACS to send results to
    with embedded_api(base, env, login="operator", scopes=SCOPES) as url:
        evaluate = subprocess.Popen(
            [BRAINSCAN, "evaluate", str(shared_data / "seed-253"), "--json"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=base,
        )
        worker = WorkerProcess(Service(env), concurrency=1, log=base / "worker.log")
        try:
            worker.wait_ready()  # the model is registered and loaded: submissions are accepted
            out, _ = evaluate.communicate(timeout=120)
            yield LiveService(url, json.loads(out.decode().strip().splitlines()[-1]), pacs)
        finally:
            evaluate.kill()
            worker.stop()
            pacs.shutdown()


def test_an_operator_submits_seed_253_watches_it_finish_and_downloads_the_results(
    service: LiveService, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(service.url + "/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    shot(page, "login")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="No jobs yet")).to_be_visible()
    shot(page, "jobs-empty")

    page.get_by_role("navigation").get_by_role("link", name="Submit").click()
    page.get_by_label("Folder, relative to the archive root").fill("../seed-253")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("alert")).to_contain_text("must not climb out of the archive root")
    shot(page, "submit-refused")
    page.get_by_label("Folder, relative to the archive root").fill("seed-253")
    page.get_by_text("Options").click()
    page.get_by_label("Images per batch").fill("32")  # eight batches: the bar moves in steps
    shot(page, "submit")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))

    progress_text = page.locator('[data-poll="job"] [data-field="progress-text"]')
    seen = set()
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while time.monotonic() < deadline and progress_text.inner_text() != "100 %":
        seen.add(progress_text.inner_text())
        page.wait_for_timeout(250)
    print("progress seen while running:", sorted(seen))
    expect(progress_text).to_have_text("100 %")
    expect(page.locator('[data-poll="job"] progress')).to_have_js_property("value", 100)
    expect(page.locator("h1 .status")).to_have_text("succeeded")

    cells = {cell: int(page.locator(f'[data-cell="{cell}"]').inner_text()) for cell in MATRIX}
    assert cells == {cell: service.evaluated[cell] for cell in MATRIX}
    thumbnails = page.locator(".gallery img")
    assert thumbnails.count() == min(cells["fn"], 48) + min(cells["tp"] + cells["fp"], 48)
    for i in range(thumbnails.count()):  # they load lazily, as they come into view
        thumbnails.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    shot(page, "job")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    saved = tmp_path / "results.csv"
    download.value.save_as(saved)
    with saved.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 253 and all(row["status"] == "scored" for row in rows)
    assert sum(row["flagged"] == "1" for row in rows) == cells["tp"] + cells["fp"]

    page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
    expect(page.locator('tr[data-status="succeeded"] [data-field="progress-text"]')).to_have_text("100 %")
    shot(page, "jobs")
    page.get_by_role("navigation").get_by_role("link", name="Model").click()
    expect(page.get_by_role("heading", name="Measured performance")).to_be_visible()
    page.locator(".plots img").last.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('.plots img')].every(i => i.complete)")
    shot(page, "model")
    context.close()


def test_an_operator_reads_a_dicom_archive_s_studies_and_reviews_20_slices(
    service: LiveService, browser: Any
) -> None:
    """Three DICOM studies (every transfer syntax, a multi-frame file, a report, a DICOMDIR): the
    job page lists each study with its verdict, series and top slices, and says what was skipped;
    then 20 slices are reviewed, one verdict at a time, and the reviewed matrix follows."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(service.url + "/login")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation").get_by_role("link", name="Submit").click()
    page.get_by_label("Folder, relative to the archive root").fill("pacs")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("h1 .status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    page.reload()  # the studies table is drawn with the page
    # (the score-shift banner is drawn in tests/api/test_rest_studies.py; the shipped model trained
    # on lgg-flair's patients, so these FLAIR slices no longer shift its scores)
    rows = page.locator("table.studies tbody tr")
    expect(rows).to_have_count(3)
    verdicts = [rows.nth(i).locator(".verdict").inner_text() for i in range(3)]
    assert set(verdicts) <= {"flagged", "not flagged"}
    assert verdicts == sorted(verdicts, key=lambda v: v != "flagged")  # flagged first
    expect(page.get_by_text("DICOMDIR (a directory of the other files)", exact=False)).to_be_visible()
    tops = page.locator(".top-slices img")
    assert tops.count() == 9  # three top slices per study
    images = page.locator(".top-slices img, .gallery img")
    for i in range(images.count()):  # they load lazily, as they come into view
        images.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.top-slices img, .gallery img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "job-dicom-studies")

    deliveries = page.locator("[data-deliveries]")
    expect(deliveries).to_contain_text("not sent")
    page.get_by_role("button", name="Send to pacs").click()
    expect(page.locator(".notice-success")).to_contain_text("the results of 3 studies go to the PACS")

    def delivered() -> bool:
        page.reload()
        return "pacs: 3 studies delivered" in deliveries.inner_text()

    assert wait_for(delivered, 30), deliveries.inner_text()
    sent = service.pacs.received
    assert sorted(ds.Modality for ds in sent).count("SR") == 3 and {ds.Modality for ds in sent} <= {
        "SR",
        "KO",
    }
    expect(page.get_by_role("button", name="Send again")).to_be_visible()
    shot(page, "job-dicom-results-sent")

    page.get_by_role("link", name="Review", exact=True).click()
    reviewed = page.locator("[data-reviewed]")
    verdicts = ("Tumour", "No tumour", "Unsure", "Tumour")
    for i in range(20):
        first = page.locator(".review-queue li").first
        shown = first.get_attribute("data-result")
        first.get_by_role("button", name=verdicts[i % 4], exact=True).click()
        expect(page.locator(f'.review-queue li[data-result="{shown}"]')).to_have_count(0)
    counts = {r.get_attribute("data-reviewed"): int(r.inner_text()) for r in reviewed.all()}
    assert sum(counts.values()) == 15  # five of the twenty were unsure
    assert counts["tp"] + counts["fn"] == 10 and counts["fp"] + counts["tn"] == 5
    expect(page.get_by_text("5 unsure", exact=False)).to_be_visible()
    shot(page, "review")
    context.close()
