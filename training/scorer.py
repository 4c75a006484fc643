"""`Scorer`: a trained model plus its card, scoring files or arrays; decoding overlaps inference."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.card import ModelCard, card_path_for, file_sha256
from training.decode import DEFAULT_MAX_PIXELS, ImageError, read_image_bytes
from training.ood import FeatureReference, with_features
from training.preprocess import PreprocessSpec, load_input

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], list[np.ndarray]]  # a batch -> the model's outputs
ImageSource = Path | str | tuple[Path, int]  # a file, or (file, frame 1..) of a multi-frame DICOM
FRAME_FILES_KEPT = 2  # a multi-frame file's bytes are read once for all its frames in a run


def frozen_predictor(model: object, batch_shape: tuple[int, ...]) -> Predictor | None:
    """The model as one TensorFlow graph for uint8 batches of exactly `batch_shape`, its weights
    folded in as constants: TensorFlow's graph optimiser can then fold each batch normalisation's
    scale into the convolution before it, which it cannot do while the weights are variables. Scores
    match Keras's to about 1e-8 and came 1.01-1.24x faster on 2 AVX2 cores, 1.13x in the median
    of six runs (bench/model_speed.py, docs/benchmarks.md). None where TensorFlow is not the
    Keras backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph = tf.function(
        lambda x: model(x, training=False),  # type: ignore[operator]
        input_signature=[tf.TensorSpec(batch_shape, tf.uint8)],
    )
    frozen = convert_variables_to_constants_v2(graph.get_concrete_function())

    def predict(batch: np.ndarray) -> list[np.ndarray]:
        return _outputs(frozen(tf.constant(batch)))

    return predict


def _outputs(out: Any) -> list[np.ndarray]:
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def batched(items: Iterable[ImageSource], size: int) -> Iterator[list[ImageSource]]:
    """Consecutive lists of `size` items (the last may be shorter), without materialising all."""
    chunk: list[ImageSource] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ModelError(RuntimeError):
    """The model file or its card is missing, damaged or inconsistent."""


def _ood_reference(model_path: Path, card: ModelCard) -> FeatureReference | None:
    """The out-of-distribution reference the card names, checked by its SHA-256; None when the card
    names none (a model trained before references existed)."""
    if not card.ood:
        return None
    path = model_path.with_name(card.ood["file"])
    if not path.is_file():
        raise ModelError(f"the card names an out-of-distribution reference that is missing: {path}")
    if file_sha256(path) != card.ood["sha256"]:
        raise ModelError(f"{path.name} is not the reference the card describes (sha256 differs)")
    return FeatureReference.load(path)


@dataclass(frozen=True)
class ScoreResult:
    """One image's outcome: a probability and flag, or an error saying why there is none."""

    path: str
    probability: float | None
    flagged: bool | None
    error: str | None = None
    sha256: str | None = None  # of the file's bytes, when asked for (the worker records it)
    error_permanent: bool = False  # trying again would fail the same way (ImageError.permanent)
    ood_distance: float | None = None  # how unlike the training images (training.ood); None: no reference
    out_of_distribution: bool | None = None  # beyond the reference's threshold: the score means little


class Scorer:
    """Loads a model and its card once; scores batches of paths or preprocessed arrays."""

    def __init__(
        self,
        model: object,
        card: ModelCard,
        *,
        threshold: float | None = None,
        threads: int = 2,
        batch_size: int = 64,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        frozen: bool = True,
        ood: FeatureReference | None = None,
    ) -> None:
        self.model = model
        self.card = card
        self.ood = ood  # with it, each score comes with its out-of-distribution distance
        try:
            self.spec = PreprocessSpec.from_dict(card.recipe["input"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model card {card.version}: {exc}") from exc
        self.threshold = float(card.threshold if threshold is None else threshold)
        self.threads = max(1, threads)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.frozen = frozen
        self._predictors: dict[tuple[int, ...], Predictor] = {}

    @classmethod
    def load(cls, model_path: Path, **kwargs: object) -> Scorer:
        """Load model + card, checking that the card describes this very file."""
        model_path = Path(model_path)
        card_path = card_path_for(model_path)
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        if not card_path.is_file():
            raise ModelError(f"model card not found beside the model: {card_path}")
        card = ModelCard.load(card_path)
        if card.model_sha256 and card.model_sha256 != file_sha256(model_path):
            raise ModelError(f"{card_path.name} describes a different model file (sha256 differs)")
        import keras

        import training.model  # noqa: F401  (registers the custom layers a saved model may use)

        try:
            model = keras.models.load_model(model_path, compile=False)
        except Exception as exc:  # Keras raises many types for a damaged or foreign file
            raise ModelError(f"cannot load model {model_path}: {type(exc).__name__}: {exc}") from exc
        return cls(model, card, ood=_ood_reference(model_path, card), **kwargs)  # type: ignore[arg-type]

    @property
    def version(self) -> str:
        return self.card.version

    def _predictor(self, batch_shape: tuple[int, ...]) -> Predictor:
        """The frozen graph for this batch shape, built on first use; Keras's own predict_on_batch
        where frozen=False or freezing is impossible (another backend, a graph it cannot fold).
        With an out-of-distribution reference it gives the pooled features too, in the same pass."""
        predict = self._predictors.get(batch_shape)
        if predict is None:
            model = self.model if self.ood is None else with_features(self.model)
            frozen = None
            if self.frozen:
                try:
                    frozen = frozen_predictor(model, batch_shape)
                except Exception as exc:  # TensorFlow raises many types; Keras's path still scores
                    log.warning(
                        "model %s: scoring through Keras, the graph could not be frozen: %s: %s",
                        self.version,
                        type(exc).__name__,
                        exc,
                    )
            predict = frozen or (lambda batch: _outputs(model.predict_on_batch(batch)))  # type: ignore[union-attr]
            self._predictors[batch_shape] = predict
        return predict

    def score_arrays(self, inputs: np.ndarray) -> np.ndarray:
        """P(tumour) for preprocessed uint8 inputs of shape (n, size, size[, 1])."""
        return self.score_and_distance(inputs)[0]

    def score_and_distance(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """P(tumour), and the out-of-distribution distance where the model has a reference (else
        None), for preprocessed uint8 inputs of shape (n, size, size[, 1])."""
        if inputs.dtype != np.uint8:
            raise ValueError(f"preprocessed slices are uint8, not {inputs.dtype}")
        if inputs.ndim == 3:
            inputs = inputs[..., None]
        out = np.zeros(len(inputs), dtype=np.float64)
        features: list[np.ndarray] = []
        b = self.batch_size
        predict = self._predictor((b, *inputs.shape[1:]))
        for start in range(0, len(inputs), b):
            chunk = inputs[start : start + b]
            padded = chunk
            if len(chunk) < b:  # a fixed batch shape: the compiled graph is reused, not retraced
                padded = np.zeros((b, *chunk.shape[1:]), dtype=np.uint8)
                padded[: len(chunk)] = chunk
            outputs = predict(padded)
            out[start : start + len(chunk)] = outputs[0].reshape(-1)[: len(chunk)]
            if self.ood is not None:
                features.append(outputs[1].reshape(b, -1)[: len(chunk)])
        if self.ood is None:
            return out, None
        return out, self.ood.distances(np.concatenate(features)) if features else np.zeros(0)

    def load_input(self, source: Path | bytes, frame: int = 0) -> np.ndarray:
        """Decode and preprocess one file (or one frame of it) exactly as training did."""
        return load_input(source, self.spec, max_pixels=self.max_pixels, frame=frame)

    def iter_scores(
        self, sources: Iterable[ImageSource], *, with_hash: bool = False
    ) -> Iterator[ScoreResult]:
        """Score files (or frames of files) in order, decoding the next batch in threads while the
        model runs; with_hash: each result carries the sha256 of its file's bytes."""

        def read(path: Path) -> tuple[bytes, str | None]:
            data = read_image_bytes(path)
            return data, hashlib.sha256(data).hexdigest() if with_hash else None

        read_frames_file = functools.lru_cache(maxsize=FRAME_FILES_KEPT)(read)  # read once, hashed once

        def load(source: ImageSource) -> np.ndarray | tuple[np.ndarray, str]:
            path, frame = source if isinstance(source, tuple) else (Path(source), 0)
            data, digest = read_frames_file(path) if frame else read(path)
            inputs = self.load_input(data, frame)
            return (inputs, digest) if digest is not None else inputs

        with ThreadPoolExecutor(self.threads) as pool:
            pending: deque[tuple[list[str], list[Future[Any]]]] = deque()
            for chunk in batched(sources, self.batch_size):
                names = [str(c[0] if isinstance(c, tuple) else c) for c in chunk]
                pending.append((names, [pool.submit(load, c) for c in chunk]))
                if len(pending) > 1:
                    yield from self._finish(*pending.popleft())
            while pending:
                yield from self._finish(*pending.popleft())

    def score_paths(self, paths: Sequence[ImageSource]) -> list[ScoreResult]:
        """All results for a list of files, one per path, in order."""
        return list(self.iter_scores(paths))

    def _finish(self, names: list[str], futures: list[Future[Any]]) -> list[ScoreResult]:
        arrays: list[np.ndarray] = []
        errors: dict[int, ImageError] = {}
        hashes: dict[int, str] = {}
        for i, fut in enumerate(futures):
            try:
                value = fut.result()
                if isinstance(value, tuple):
                    value, hashes[i] = value
                arrays.append(value)
            except ImageError as exc:
                errors[i] = exc
            except Exception as exc:  # a decoder bug must cost one image, not the batch; a fix may read it
                errors[i] = ImageError(
                    f"could not decode image: {type(exc).__name__}: {exc}", permanent=False
                )
        probs, distances = self.score_and_distance(np.stack(arrays)) if arrays else (np.zeros(0), None)
        scored = iter(range(len(probs)))
        results = []
        for i, name in enumerate(names):
            if i in errors:
                error = errors[i]
                results.append(ScoreResult(name, None, None, error.reason, error_permanent=error.permanent))
                continue
            k = next(scored)
            p = float(probs[k])
            distance = None if distances is None else float(distances[k])
            beyond = None if distance is None or self.ood is None else distance > self.ood.threshold
            results.append(
                ScoreResult(
                    name,
                    p,
                    p >= self.threshold,
                    None,
                    hashes.get(i),
                    ood_distance=distance,
                    out_of_distribution=beyond,
                )
            )
        return results
