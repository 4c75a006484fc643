"""The smallest network of the recipe's shape: what training tests fit in seconds on 2 cores."""

from __future__ import annotations

from training.backend import import_backend

import_backend()

from training.model import ModelConfig  # noqa: E402

TINY_NETWORK = ModelConfig(input_size=32, stem_width=8, widths=(8, 16), blocks=(1, 1))
