"""Preprocessing: head crop, intensity normalisation and resizing, one function for train and score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.images import create_random_slice, save_image
from training.decode import ImageError
from training.preprocess import PreprocessSpec, head_box, load_input, preprocess


def test_output_shape_and_type() -> None:
    out = preprocess(create_random_slice(200, seed=1), PreprocessSpec(size=96))
    assert out.shape == (96, 96) and out.dtype == np.uint8


def test_head_crop_removes_background_padding() -> None:
    head = create_random_slice(100, seed=2)
    padded = np.zeros((300, 400), np.uint8)
    padded[120:220, 40:140] = head  # small head in a large black frame, off centre
    spec = PreprocessSpec(size=100, normalise=False)
    top, bottom, left, right = head_box(padded, spec)
    assert 115 <= top <= 130 and 210 <= bottom <= 225 and 35 <= left <= 55 and 125 <= right <= 145
    # after cropping, the off-centre head fills the frame just like the centred original
    a, b = preprocess(padded, spec), preprocess(head, spec)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_normalisation_cancels_global_brightness_and_contrast() -> None:
    grey = create_random_slice(128, seed=3)
    dim = (grey.astype(np.float32) * 0.4).astype(np.uint8)  # a darker scanner
    spec = PreprocessSpec(size=64)
    assert np.abs(preprocess(grey, spec).astype(int) - preprocess(dim, spec)).mean() < 6


def test_blank_image_is_an_error() -> None:
    with pytest.raises(ImageError, match="blank"):
        preprocess(np.full((64, 64), 17, np.uint8), PreprocessSpec())


def test_load_input_is_decode_then_preprocess(tmp_path: Path) -> None:
    grey = create_random_slice(150, seed=4)
    path = save_image(tmp_path / "s.png", grey)
    spec = PreprocessSpec(size=80)
    assert np.array_equal(load_input(path, spec), preprocess(grey, spec))


def test_spec_round_trips_through_a_dict() -> None:
    spec = PreprocessSpec(size=144, crop=False, crop_margin=0.05)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    older = {k: v for k, v in spec.to_dict().items() if k != "version"}  # a card from before it
    assert PreprocessSpec.from_dict(older).version == 1


def test_a_card_with_preprocessing_this_code_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match=r"setting\(s\) sharpen unknown .* needs a newer one"):
        PreprocessSpec.from_dict({**PreprocessSpec().to_dict(), "sharpen": 1.0})
