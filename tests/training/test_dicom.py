"""DICOM: photometric interpretation, rescale, windowing, compressed and multi-frame files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless

from tests.images import create_random_slice, write_dicom
from training.decode import ImageError, decode_image


def mri(seed: int = 0) -> np.ndarray:
    return create_random_slice(96, seed=seed).astype(np.uint16) * 16  # 12-bit range


def test_monochrome2_keeps_contrast_direction(tmp_path: Path) -> None:
    pixels = mri(1)
    out = decode_image(write_dicom(tmp_path / "a.dcm", pixels))
    assert out.shape == (96, 96) and out.dtype == np.uint8
    assert np.corrcoef(out.ravel(), pixels.ravel())[0, 1] > 0.99


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = mri(2)
    out = decode_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    assert np.corrcoef(out.ravel(), pixels.ravel())[0, 1] < -0.99


def test_rescale_and_window_are_applied(tmp_path: Path) -> None:
    pixels = mri(3)
    plain = decode_image(write_dicom(tmp_path / "p.dcm", pixels))
    windowed = decode_image(
        write_dicom(tmp_path / "w.dcm", pixels, slope=2.0, intercept=-100, window=(600.0, 400.0))
    )
    # a narrow window saturates more pixels than the full-range view
    assert (windowed == 255).mean() > (plain == 255).mean()


def test_dicom_without_suffix_is_found_by_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", mri(4))
    assert decode_image(path).shape == (96, 96)


def test_multi_frame_is_refused_clearly(tmp_path: Path) -> None:
    stack = np.stack([mri(5), mri(6)])
    with pytest.raises(ImageError, match="multi-frame DICOM \\(2 frames\\)"):
        decode_image(write_dicom(tmp_path / "multi.dcm", stack, frames=2))


def test_an_enhanced_image_s_frames_take_their_own_rescale_and_window(tmp_path: Path) -> None:
    """Enhanced MR keeps rescale and window in functional groups, not at the top level: each frame
    reads as the same slice saved alone with those values at the top level."""
    import pydicom
    from pydicom.dataset import Dataset

    def item(**values: object) -> Dataset:
        found = Dataset()
        for keyword, value in values.items():
            setattr(found, keyword, value)
        return found

    slices = [mri(8), mri(9)]
    windows = [(600.0, 400.0), (1500.0, 3000.0)]
    path = write_dicom(tmp_path / "enhanced.dcm", np.stack(slices), frames=2)
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence = [
        item(
            PixelValueTransformationSequence=[
                item(RescaleSlope=2.0, RescaleIntercept=-100.0, RescaleType="US")
            ]
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        item(FrameVOILUTSequence=[item(WindowCenter=center, WindowWidth=width)]) for center, width in windows
    ]
    ds.save_as(path)
    for frame, (pixels, window) in enumerate(zip(slices, windows, strict=True), start=1):
        alone = write_dicom(tmp_path / f"alone-{frame}.dcm", pixels, slope=2.0, intercept=-100, window=window)
        assert np.array_equal(decode_image(path, frame=frame), decode_image(alone))
    # without the groups a frame would be stretched over its full range: not what the scanner meant
    assert not np.array_equal(
        decode_image(path, frame=1), decode_image(write_dicom(tmp_path / "p.dcm", slices[0]))
    )


def test_compressed_transfer_syntax_is_reported(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "j2k.dcm", mri(7), syntax=JPEG2000Lossless)
    with pytest.raises(ImageError, match=r"JPEG 2000|compressed|corrupt"):
        decode_image(path)


def test_corrupt_dicom(tmp_path: Path) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(ImageError):
        decode_image(path)


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("frames", [1, 3])
def test_uncompressed_pixels_read_straight_from_the_bytes_equal_pydicom_s(
    tmp_path: Path, signed: int, frames: int
) -> None:
    """The fast path for uncompressed slices masks unused high bits and sign-extends as pydicom
    does, frame by frame; garbage in the high bits included."""
    import pydicom
    from pydicom.pixels import pixel_array

    from training.dicom import PixelLayout, _native_pixels

    rng = np.random.default_rng(signed + frames)
    stack = rng.integers(0, 2**16, (frames, 24, 32), dtype=np.uint16)  # 12 bits stored, 16 allocated
    path = write_dicom(tmp_path / "x.dcm", stack if frames > 1 else stack[0], frames=frames)
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = signed
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    for frame in range(1, frames + 1) if frames > 1 else [0]:
        expected = pixel_array(ds, index=frame - 1) if frame else ds.pixel_array
        found = _native_pixels(ds, PixelLayout.of(ds), frame)
        assert found is not None and found.dtype == expected.dtype
        assert np.array_equal(found, expected)
