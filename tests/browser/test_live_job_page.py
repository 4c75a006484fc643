"""The job page while a job runs, in headless Chromium: the parts counters cannot update (the
matrix once it appears, the flagged images, the details, the batches) are drawn again from the
server as batches finish, without reloading the page.

No worker runs here: the test scores the job's batches itself, one at a time, between looks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import Service
from db.batches import claim_batch, finish_batch
from db.progress import job_progress
from db.results import ScoredImage, pending_images, record_results
from tests.browser.conftest import PASSWORD, embedded_api, require_chromium, shot
from tests.images import create_random_slice, save_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Service, Path]]:
    """An API (gunicorn) on a fresh embedded database with an admin login; no worker."""
    require_chromium()
    base = tmp_path_factory.mktemp("live")
    folder = base / "archive" / "ward-7"
    for i in range(24):
        label = "yes" if i % 2 else "no"
        save_image(folder / label / f"s{i:02d}.png", create_random_slice(96, seed=i, lesion=label == "yes"))
    env = {
        "BRAINSCAN_ENV": "test",
        "BRAINSCAN_DATA_DIR": str(base / "data"),
        "BRAINSCAN_ARCHIVE_ROOT": str(base / "archive"),
        "BRAINSCAN_DATABASE_URL": "",
        "BRAINSCAN_BROKER_URL": "",
    }
    with embedded_api(base, env, login="admin", scopes=("admin",)) as url:
        yield url, Service(env), folder


def score_one(service: Service, job_id: int, batch_id: int, seed: int) -> None:
    """Score a batch as a worker would, with seeded random scores: about half flagged."""
    rng = random.Random(seed)
    with service.sessions().begin() as session:
        claim_batch(session=session, batch_id=batch_id, worker=f"test:1:task-{batch_id}")
        results = []
        for image in pending_images(session=session, batch_id=batch_id):
            p = rng.random()
            results.append(ScoredImage(image.relpath, p, p >= 0.5, frame=image.frame))
        record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)
        finish_batch(session=session, batch_id=batch_id, seconds=0.5)


def test_the_job_page_draws_new_flagged_images_and_batches_without_a_reload(
    live: tuple[str, Service, Path], browser: Any
) -> None:
    from playwright.sync_api import expect

    url, service, folder = live
    job_id, _ = service.create_job(folder, model_version="test-model", threshold=0.5, batch_size=8)
    sent: list[int] = []
    service.plan(job_id, enqueue=sent.extend)  # nothing is sent: no worker takes them
    assert len(sent) == 3

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{url}/jobs/{job_id}")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1 .status")).to_have_text("running")
    expect(page.get_by_text("The matrix appears as labelled images are scored.")).to_be_visible()
    page.evaluate("() => { window.drawnOnce = true; }")  # gone if the page reloads

    flagged = page.locator('section[aria-labelledby="flagged-title"] .count')
    done_batches = page.locator("table.batches .status-done")
    for n, batch_id in enumerate(sent[:2], start=1):
        score_one(service, job_id, batch_id, seed=n)
        expect(done_batches).to_have_count(n, timeout=20_000)
    with service.sessions()() as session:
        report = job_progress(session=session, job_id=job_id)
    expect(flagged).to_have_text(str(report.flagged))
    assert report.tp + report.fn > 0
    expect(page.locator('[data-cell="tp"]')).to_have_text(str(report.tp))  # the matrix appeared
    assert page.locator('section[aria-labelledby="flagged-title"] .gallery img').count() == report.flagged
    assert page.evaluate("() => window.drawnOnce === true")  # all of it without a reload
    expect(page.locator("h1 .status")).to_have_text("running")
    shot(page, "job-running")
    context.close()


OVERFLOW = """() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    out.push('page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
    document.querySelectorAll('body *').forEach((el) => {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > window.innerWidth + 1 && out.length < 10) {
        out.push(el.tagName + '.' + el.className + ' ends at ' + Math.round(r.right));
      }
    });
  }
  const scrolls = (el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  document.querySelectorAll('.card').forEach((card, i) => {
    if (scrolls(card)) { return; }  // a card that is itself a scrolling frame
    card.querySelectorAll('*').forEach((el) => {
      const r = el.getBoundingClientRect(), c = card.getBoundingClientRect();
      let inside = el.parentElement, wrapped = false;
      while (inside && inside !== card) {
        wrapped = wrapped || scrolls(inside);
        inside = inside.parentElement;
      }
      if (!wrapped && r.width > 0 && r.right > c.right + 1) {
        const name = el.tagName + '.' + el.className;
        out.push(`card ${i}: ${name} ends at ${Math.round(r.right)} > ${Math.round(c.right)}`);
      }
    });
  });
  return out.slice(0, 10);
}"""


@pytest.mark.parametrize("width", [1440, 390])
def test_the_jobs_and_job_pages_fit_the_screen(
    live: tuple[str, Service, Path], browser: Any, width: int
) -> None:
    """Nothing sticks out of its card or the page at a desktop and a phone width (a wide table
    scrolls inside its own frame)."""
    url, service, folder = live
    job_id, _ = service.create_job(folder, model_version="test-model", threshold=0.5, batch_size=8)
    sent: list[int] = []
    service.plan(job_id, enqueue=sent.extend)
    for n, batch_id in enumerate(sent, start=1):
        score_one(service, job_id, batch_id, seed=10 + n)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/jobs")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    for path, name in (
        ("/jobs", "jobs"),
        (f"/jobs/{job_id}", "job"),
        ("/model", "model"),
        ("/audit", "audit"),
    ):
        page.goto(url + path)
        page.wait_for_load_state("networkidle")
        shot(page, f"{name}-{width}")
        problems = page.evaluate(OVERFLOW)
        assert problems == [], f"{path} at {width} px: {problems}"
    context.close()
