"""Planning and job throughput on the DICOM test archive against the same slices as JPEG, in one run.

    python bench/dicom_speed.py [--patients 20] [--repeats 3] [--batch-size 256] [--threads 2]

Issue 36: reading every DICOM file's header at planning must not cost the job its speed. Builds the
archive of the first N lgg-flair patients (bench/dicom_archive.py: compressed transfer syntaxes, a
multi-frame file, a DICOMDIR, an SR, a presentation state, labels.csv) and, as the baseline, a
folder of exactly those slices' source JPEGs in yes/ and no/. After one untimed job on each (page
cache, decoders and graph warm), this one process runs a job per folder per repeat, alternated
(each repeat's first folder in turn), each in a fresh SQLite database (the embedded service):
  planning   Service.plan of a job for the folder: images planned/s, and files/s over every file
             in the folder (for DICOM the DICOMDIR, SR, presentation state and labels.csv too)
  scoring    every batch scored with the shipped model in this process, as score_batch does
  job        images / (planning + scoring seconds): the service scores batches while planning
             still walks, so this is a job's speed with no overlap, the worst case
Medians over the repeats, the ratios DICOM / JPEG, and PASS when the job's ratio is >= 0.8.
TensorFlow gets every core (one process, as a worker with one process per machine); --threads
decode threads, as the worker's default.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from dicom_archive import build_archive, find_scans  # noqa: E402

from brainscan.keys import patient_hash_key  # noqa: E402
from brainscan.testing import Service  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from training.scorer import Scorer  # noqa: E402

MODEL = REPO / "models" / "brainscan.keras"
TARGET = 0.8  # the job on DICOM keeps at least this share of the JPEG job's images/s
COLUMNS = (  # (heading, Timing property) of the table
    ("planning files/s", "plan_files_per_second"),
    ("planning images/s", "plan_images_per_second"),
    ("scoring images/s", "score_images_per_second"),
    ("job images/s", "job_images_per_second"),
)


@dataclass(frozen=True)
class Timing:
    """One job's run: what planning found and how long each part took."""

    files: int
    images: int
    unscored: int  # images recorded with an error (a blank slice is refused, as JPEG or DICOM)
    plan_seconds: float
    score_seconds: float

    @property
    def plan_files_per_second(self) -> float:
        return self.files / self.plan_seconds

    @property
    def plan_images_per_second(self) -> float:
        return self.images / self.plan_seconds

    @property
    def score_images_per_second(self) -> float:
        return self.images / self.score_seconds

    @property
    def job_images_per_second(self) -> float:
        return self.images / (self.plan_seconds + self.score_seconds)


def jpeg_baseline(src: Path, dest: Path, *, patients: int) -> list[Path]:
    """Copy the source JPEGs of the slices the archive of `patients` holds into dest/yes and dest/no."""
    copied = []
    for scan in find_scans(src)[:patients]:
        for piece in scan.slices:
            target = dest / ("yes" if piece.label else "no") / piece.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copyfile(piece.path, target)))
    return copied


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def run_job(folder: Path, workdir: Path, template: Path, scorer: Scorer, batch_size: int) -> Timing:
    """Plan and score one job for `folder` in a fresh copy of the migrated database."""
    workdir.mkdir()
    shutil.copyfile(template, workdir / "brainscan.db")
    service = Service(
        {
            "BRAINSCAN_ENV": "test",
            "BRAINSCAN_DATA_DIR": str(workdir),
            "BRAINSCAN_DATABASE_URL": f"sqlite:///{workdir / 'brainscan.db'}",
            "BRAINSCAN_ARCHIVE_ROOT": str(folder.parent),
            "BRAINSCAN_MODEL_PATH": str(MODEL),
        }
    )
    patient_hash_key(service.settings)  # made once per data folder: not part of planning's time
    job_id, _ = service.create_job(
        folder, model_version=scorer.version, threshold=scorer.threshold, batch_size=batch_size
    )
    batches: list[int] = []
    started = time.perf_counter()
    service.plan(job_id, enqueue=batches.extend)
    planned = time.perf_counter()
    for batch_id in batches:
        service.score(batch_id, scorer=scorer, worker="bench:1:t")
    scored = time.perf_counter()
    job = service.job(job_id)
    if job.status != "succeeded":
        raise SystemExit(f"{folder.name}: job {job.status}: {job.error}")
    unscored = job.total - sum(n or 0 for n in (job.tp, job.fp, job.tn, job.fn))  # every image is labelled
    return Timing(len(_files_in(folder)), job.total, unscored, planned - started, scored - planned)


def warm(folders: dict[str, Path], workdir: Path, template: Path, scorer: Scorer, batch_size: int) -> None:
    """Page cache, decoders and the model's graph warm for both folders alike: one job each, untimed."""
    for name, folder in folders.items():
        for f in _files_in(folder):
            f.read_bytes()
        run_job(folder, workdir / f"{name}-warm", template, scorer, batch_size)


def report(runs: dict[str, list[Timing]]) -> bool:
    """Print the medians and the ratios DICOM / JPEG; True when the job's ratio reaches TARGET."""
    medians = {
        name: [float(statistics.median(getattr(t, field) for t in timings)) for _, field in COLUMNS]
        for name, timings in runs.items()
    }
    ratios = [d / j for d, j in zip(medians["DICOM"], medians["JPEG"], strict=True)]
    print(f"\n{'median of ' + str(len(runs['JPEG'])):<14}" + "".join(f"{h:>19}" for h, _ in COLUMNS))
    for name, values in medians.items():
        print(f"{name:<14}" + "".join(f"{v:19.0f}" for v in values))
    print(f"{'DICOM / JPEG':<14}" + "".join(f"{r:19.2f}" for r in ratios))
    passed = ratios[-1] >= TARGET
    print(f"job ratio {ratios[-1]:.2f} (target >= {TARGET}): {'PASS' if passed else 'FAIL'}")
    return passed


def archive_parser(doc: str | None, *, patients: int) -> argparse.ArgumentParser:
    """The arguments both DICOM speed benches take: which archive, against its JPEG slices, how often."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--patients", type=int, default=patients, help="the first N lgg-flair patients")
    parser.add_argument("--repeats", type=int, default=3, help="jobs per folder, alternated; medians")
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "lgg-flair")
    parser.add_argument(
        "--uncompressed",
        action="store_true",
        help="every DICOM slice uncompressed: reading, not decompressing",
    )
    return parser


def main() -> int:
    parser = archive_parser(__doc__, patients=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="decode threads (the worker's default)")
    args = parser.parse_args()

    from training.backend import import_backend, one_blas_thread, serve_from_heap, threads_per_process

    import_backend(threads=threads_per_process(1))
    serve_from_heap()
    one_blas_thread()
    scorer = Scorer.load(MODEL, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="brainscan-dicom-speed-") as tmp:
        workdir = Path(tmp)
        folders = {"DICOM": workdir / "archive" / "dicom", "JPEG": workdir / "archive" / "jpeg"}
        summary = build_archive(
            args.src, folders["DICOM"], patients=args.patients, compressed=not args.uncompressed
        )
        slices = len(jpeg_baseline(args.src, folders["JPEG"], patients=args.patients))
        template = workdir / "template.db"
        upgrade(f"sqlite:///{template}")
        warm(folders, workdir, template, scorer, args.batch_size)
        print(f"{summary.studies} patients, {slices} slices: DICOM {summary.instances} image files ", end="")
        print(f"({summary.frames} frames) + {summary.non_image_files} other objects, DICOMDIR, labels.csv")
        print(f"{os.cpu_count()} cores, TensorFlow threads {threads_per_process(1)}, decode threads ", end="")
        print(f"{args.threads}, batch {args.batch_size}, model {scorer.version}")
        runs: dict[str, list[Timing]] = {name: [] for name in folders}
        for repeat in range(args.repeats):
            order = list(folders) if repeat % 2 == 0 else list(reversed(folders))  # neither always first
            for name in order:
                folder = folders[name]
                timing = run_job(folder, workdir / f"{name}-{repeat}", template, scorer, args.batch_size)
                runs[name].append(timing)
                print(
                    f"  {name:<5} run {repeat + 1}: {timing.files} files, {timing.images} images "
                    f"({timing.unscored} not scored), "
                    f"planned in {timing.plan_seconds:.3f} s, scored in {timing.score_seconds:.2f} s"
                )
        return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
