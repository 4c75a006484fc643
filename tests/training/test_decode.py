"""Decoding: every supported format gives the same grey slice; bad files give a clear reason."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images import create_random_slice, encoded, save_image
from training.decode import ImageError, decode_image, is_image_candidate


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")])
def test_lossless_formats_decode_to_the_same_pixels(tmp_path: Path, fmt: str, suffix: str) -> None:
    grey = create_random_slice(96, seed=3)
    path = save_image(tmp_path / f"slice.{suffix}", grey, fmt)
    assert np.array_equal(decode_image(path), grey)


def test_jpeg_stored_as_rgb_decodes_to_grey(tmp_path: Path) -> None:
    grey = create_random_slice(96, seed=4)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    out = decode_image(save_image(tmp_path / "Y (3).JPG", rgb, "JPEG", quality=95))
    assert out.shape == (96, 96) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - grey).mean() < 4


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    grey = create_random_slice(64, seed=5)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    assert np.array_equal(decode_image(save_image(tmp_path / "a.png", rgba)), grey)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_images_are_windowed_to_8_bit(tmp_path: Path, suffix: str) -> None:
    values = create_random_slice(64, seed=6).astype(np.uint16) * 200  # 0..51000
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(values).save(path)
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    assert np.corrcoef(out.ravel(), values.ravel())[0, 1] > 0.99


def test_large_jpeg_draft_decodes_reduced(tmp_path: Path) -> None:
    big = np.asarray(Image.fromarray(create_random_slice(128, seed=7)).resize((1024, 1024)))
    out = decode_image(save_image(tmp_path / "big.jpg", big), draft_side=320)
    assert 320 <= out.shape[0] < 1024


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"hello, this is not an image at all" * 10, "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a recognised image format|unreadable"),
    ],
)
def test_bad_bytes_give_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode_image(path)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    data = encoded(create_random_slice(128, seed=8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        decode_image(path)


def test_one_pixel_image_is_too_small(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="too small"):
        decode_image(save_image(tmp_path / "dot.png", np.zeros((1, 1), np.uint8)))


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height zeros: tiny on disk, huge once decoded."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(20000, 20000))
    with pytest.raises(ImageError, match=r"20000x20000.*decompression bomb"):
        decode_image(path)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="directory"):
        decode_image(tmp_path)
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path / "nope.jpg")


def test_errors_say_whether_another_try_could_pass(tmp_path: Path) -> None:
    """A re-run retries what was missing, empty or unreadable, never bytes that are no slice."""

    def permanent(source: Path) -> bool:
        with pytest.raises(ImageError) as caught:
            decode_image(source)
        return caught.value.permanent

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello, this is not an image at all" * 10)
    data = encoded(create_random_slice(128, seed=8))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    unreadable = tmp_path / "locked.jpg"
    unreadable.write_bytes(data)
    unreadable.chmod(0)
    assert not permanent(tmp_path / "missing.jpg")
    assert not permanent(tmp_path / "empty.jpg")  # a copy still in progress
    if os.geteuid() != 0:  # root reads a file whatever its mode
        assert not permanent(unreadable)
    assert permanent(tmp_path / "text.png")
    assert permanent(tmp_path / "cut.jpg")
    assert permanent(save_image(tmp_path / "dot.png", np.zeros((1, 1), np.uint8)))


def test_candidates_by_suffix_and_dicom_preamble(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "IM0001").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 10)
    (tmp_path / "README").write_text("plain text without suffix")
    assert is_image_candidate(tmp_path / "Y (1).JPG")
    assert is_image_candidate(tmp_path / "IM0001")
    assert not is_image_candidate(tmp_path / "notes.txt")
    assert not is_image_candidate(tmp_path / "README")


def test_bytes_source_equals_file_source(tmp_path: Path) -> None:
    grey = create_random_slice(64, seed=9)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    assert np.array_equal(decode_image(buf.getvalue()), grey)
