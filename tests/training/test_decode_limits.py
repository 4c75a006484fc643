"""Memory is bounded before decoding: the probe's bombs are refused from their headers and sizes.

Each file is decoded in a fresh Python process whose peak resident memory (VmHWM, which starts
afresh at exec, unlike ru_maxrss) is read afterwards: the figure is the decode's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.images import save_image, write_deflated_dicom_bomb, write_dicom, write_sparse_file
from training.decode import DEFAULT_MAX_PIXELS

PEAK_LIMIT_MB = 400  # an interpreter with numpy, Pillow and pydicom is ~60 MB; a bomb used 1.6-5.7 GB
PEAK = """
import json, re
from pathlib import Path
peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(json.dumps({**outcome, "peak_mb": int(peak_kb) / 1024}))
"""
DECODE = """
import sys
from pathlib import Path
from training.decode import ImageError, decode_image
try:
    outcome = {"shape": list(decode_image(Path(sys.argv[1])).shape), "reason": None}
except ImageError as exc:
    outcome = {"shape": None, "reason": exc.reason}
"""
PLAN = """
import sys
from pathlib import Path
from training.dicom_header import contents_of
outcome = {"frames": list(contents_of(Path(sys.argv[1]), "bomb.dcm", key=b"k" * 32).frames)}
"""


def in_child(script: str, path: Path) -> dict[str, object]:
    """`script` on `path` in a new process: the `outcome` it sets, and the process's peak memory."""
    done = subprocess.run(
        [sys.executable, "-c", script + PEAK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def decode_in_child(path: Path) -> dict[str, object]:
    """decode_image(path) in a new process: its shape or refusal, and the process's peak memory."""
    return in_child(DECODE, path)


def test_a_deflated_dicom_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    bomb = write_deflated_dicom_bomb(tmp_path / "bomb.dcm")  # 256 MiB of pixels behind 128x128
    assert bomb.stat().st_size < 400_000
    outcome = decode_in_child(bomb)
    assert outcome["shape"] is None and "possible decompression bomb" in str(outcome["reason"])
    assert float(outcome["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_planning_reads_a_deflated_bomb_s_header_without_inflating_its_pixels(tmp_path: Path) -> None:
    """pydicom's reader inflates a deflated data set whole, header only or not: planning this file
    took 589 MB (a 1-MB one of 1 GiB, 2.1 GB). Planning now inflates at most 1 MiB of it; scoring
    then refuses the bomb."""
    bomb = write_deflated_dicom_bomb(tmp_path / "bomb.dcm")  # 256 MiB of pixels behind 128x128
    outcome = in_child(PLAN, bomb)
    assert outcome["frames"] == [0]  # planned as one image, its header read
    assert float(outcome["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_pixel_data_longer_than_the_header_declares_is_refused(tmp_path: Path) -> None:
    excess = write_dicom(tmp_path / "excess.dcm", np.zeros((128, 128)), pixel_data=bytes(64 * 1024**2))
    outcome = decode_in_child(excess)
    assert outcome["reason"] == (
        "DICOM pixel data holds 67,108,864 bytes where the header declares "
        "32,768 (128x128, 1 frame(s), 16-bit)"
    )
    assert float(outcome["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_a_huge_sixteen_bit_png_is_refused_from_its_header(tmp_path: Path) -> None:
    png = save_image(tmp_path / "big.png", np.zeros((7999, 8000), dtype=np.uint16))
    assert png.stat().st_size < 200_000
    outcome = decode_in_child(png)
    assert "8000x7999 pixels, above the limit" in str(outcome["reason"])
    assert float(outcome["peak_mb"]) < 150  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_largest_sixteen_bit_image_allowed_decodes_within_the_bound(tmp_path: Path) -> None:
    side = int(np.sqrt(DEFAULT_MAX_PIXELS))
    ramp = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    outcome = decode_in_child(save_image(tmp_path / "largest.png", ramp))
    assert outcome["shape"] == [side, side]
    assert float(outcome["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_a_sparse_multi_gigabyte_file_is_refused_unread(tmp_path: Path) -> None:
    sparse = write_sparse_file(tmp_path / "huge.jpg", b"\xff\xd8\xff\xe0", 1536 * 1024**2)
    outcome = decode_in_child(sparse)
    assert outcome["reason"] == "file is 1,536 MiB, above the limit of 256 MiB for one image"
    assert float(outcome["peak_mb"]) < 150  # type: ignore[arg-type]
