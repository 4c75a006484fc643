"""What one DICOM slice costs to read, by transfer syntax, against its source JPEG, in one run.

    python bench/dicom_decode.py [--patients 20] [--repeats 3]

bench/dicom_speed.py and bench/dicom_service_speed.py time whole jobs; this says where a job's
time per slice goes. Builds the DICOM test archive of the first N lgg-flair patients
(bench/dicom_archive.py) and, per transfer syntax, times over every slice in it:
  header     training.dicom_header.contents_of, what planning reads of each file
  decode     training.decode.decode_image, what scoring reads of each slice (file bytes in memory)
  2 threads  the same decodes shared by two threads, as the worker's decode pool runs them: a
             decoder that holds Python's lock (the GIL) gains nothing from the second thread
The baseline is the same slices' source JPEGs through decode_image, in the same run. Medians of
the repeats, in ms a slice.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from dicom_archive import build_archive  # noqa: E402
from dicom_speed import archive_parser, jpeg_baseline  # noqa: E402

from training.decode import decode_image  # noqa: E402
from training.dicom_header import contents_of  # noqa: E402
from training.dicom_scan import dataset_of  # noqa: E402

KEY = b"bench" * 8
BASELINE = "JPEG file (baseline)"
COLUMNS = ("header", "decode", "2 threads")
T = TypeVar("T")


def per_item_ms(items: Sequence[T], work: Callable[[T], object], *, threads: int = 1) -> float:
    """Milliseconds of wall time per item to do `work` on every item, with `threads` threads."""
    start = time.perf_counter()
    if threads == 1:
        for item in items:
            work(item)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, items))
    return (time.perf_counter() - start) / len(items) * 1e3


def by_syntax(root: Path) -> dict[str, list[Path]]:
    """The archive's single-frame image files by transfer syntax name (reports and the DICOMDIR out)."""
    import pydicom

    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("IM*")):
        ds = dataset_of(path, stop_before_pixels=True) or pydicom.dcmread(path, stop_before_pixels=True)
        if int(ds.get("NumberOfFrames", 1) or 1) == 1:
            found[ds.file_meta.TransferSyntaxUID.name].append(path)
    return found


def main() -> int:
    args = archive_parser(__doc__, patients=20).parse_args()
    warnings.simplefilter("ignore")  # pydicom's notes on the files it reads are not the measure
    with tempfile.TemporaryDirectory(prefix="brainscan-dicom-decode-") as tmp:
        build_archive(args.src, Path(tmp) / "dicom", patients=args.patients)
        groups = {
            **by_syntax(Path(tmp) / "dicom"),
            BASELINE: jpeg_baseline(args.src, Path(tmp) / "jpeg", patients=args.patients),
        }
        rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for _ in range(args.repeats):
            for name, paths in groups.items():
                datas = [p.read_bytes() for p in paths]
                for data in datas[:5]:  # decoders loaded, caches warm
                    decode_image(data)
                if name != BASELINE:
                    rows[name]["header"].append(per_item_ms(paths, lambda p: contents_of(p, p.name, key=KEY)))
                rows[name]["decode"].append(per_item_ms(datas, decode_image))
                rows[name]["2 threads"].append(per_item_ms(datas, decode_image, threads=2))
    print(f"{args.patients} patients, median of {args.repeats}, ms a slice\n")
    print(f"{'transfer syntax':<62} {'slices':>6} {'header':>7} {'decode':>7} {'2 threads':>9}")
    for name, timings in rows.items():
        cells = [f"{statistics.median(timings[k]):.2f}" if k in timings else "" for k in COLUMNS]
        print(f"{name[:62]:<62} {len(groups[name]):>6} {cells[0]:>7} {cells[1]:>7} {cells[2]:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
