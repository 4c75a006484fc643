"""Fit the CNN on arrays: augmentation, class balance, cosine schedule, the last epoch or the best."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from training.augment import AugmentedBatches
from training.card import known_settings
from training.model import Network, build_model


@dataclass(frozen=True)
class Optimisation:
    """How the network is fitted (a recipe's `optimisation` group, `training.recipes`)."""

    epochs: int  # the cosine schedule decays to ~0 by the last epoch
    batch_size: int
    learning_rate: float  # peak of the cosine schedule
    warmup_epochs: int  # linear warm-up protects batch-norm statistics early on
    weight_decay: float  # AdamW's decoupled decay (the network's kernel_l2 is a loss term apart)
    label_smoothing: float  # softer targets: better-ranked probabilities for thresholding
    keep_last: bool  # keep the last epoch's weights (learning rate decayed to ~0); validation AUC
    # is recorded each epoch but picks nothing. False: the best validation epoch's, stopping early
    patience: int  # without keep_last: epochs without a better validation AUC before stopping
    augment_strength: float  # scales every pose and intensity augmentation range (0: none)
    balance_classes: bool  # weight classes inversely to their frequency
    source_balance: float  # weight each source's images by (its image count)^-this: 0 as they
    # come, 1 every source weighs the same in total (then classes are balanced, if asked, overall)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Optimisation:
        return cls(**known_settings(cls, data, "optimisation"))


MEMBER_SEED_STRIDE = 7919  # ensemble member n's fit is seeded seed + n * this


@dataclass
class FitResult:
    """A trained model and what happened while training it."""

    model: keras.Model
    history: dict[str, list[float]]  # an ensemble's: its first member's
    best_epoch: int  # the epoch whose weights were kept (keep_last: the last); an ensemble's: member 0's
    seconds: float
    member_best_epochs: tuple[int, ...] = ()  # an ensemble's, one per member
    member_histories: tuple[dict[str, list[float]], ...] = ()  # an ensemble's, one per member


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr: a progress display that survives logs and pipes."""

    shown = ("loss", "auc", "val_loss", "val_auc")

    def __init__(self, epochs: int, prefix: str = "") -> None:
        super().__init__()
        self.epochs, self.prefix, self.started = epochs, prefix, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {logs[k]:.4f}" for k in self.shown if k in logs]
        took = time.perf_counter() - self.started
        line = f"{self.prefix}epoch {epoch + 1:>3}/{self.epochs}  " + "  ".join(parts)
        print(f"{line}  ({took:.1f} s)", file=sys.stderr, flush=True)


def describe_device() -> str:
    """Which accelerator training will use, for the log and the card."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"tensorflow GPU x{len(gpus)}" if gpus else "tensorflow CPU"
    if backend == "jax":
        import jax

        return f"jax {jax.devices()[0].platform}"
    return str(backend)


def _schedule(cfg: Optimisation, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, cfg.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * 0.05,
        decay_steps=total - warmup,
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )


def sample_weights(
    labels: np.ndarray,
    balance_classes: bool,
    *,
    sources: np.ndarray | None = None,
    source_balance: float = 0.0,
) -> np.ndarray:
    """One loss weight per training sample, averaging 1. source_balance > 0 (with `sources`, one
    name per sample): a source of n images weighs n^-source_balance each; then balance_classes:
    each class weighs as much in total as the other."""
    weights = np.ones(len(labels), dtype=np.float64)
    if source_balance > 0 and sources is not None:
        _, index, counts = np.unique(sources, return_inverse=True, return_counts=True)
        weights = counts[index].astype(np.float64) ** -source_balance
    if balance_classes:
        totals = np.bincount(labels, weights=weights, minlength=2)
        weights = weights / (2 * np.maximum(totals[labels], 1e-12))
    scaled: np.ndarray = weights * (len(labels) / weights.sum()) if len(labels) else weights
    return scaled


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    network: Network,
    optimisation: Optimisation,
    seed: int,
    member: int = 0,
    prefix: str = "",
    loader_threads: int = 2,
    sources: np.ndarray | None = None,
) -> FitResult:
    """Train from scratch on uint8 (n, size, size, 1) slices. An ensemble (network.members > 1)
    trains each member apart, as ensemble members `member`, +1, ..., and returns one network that
    averages them. Member n's initialisation and augmentation are seeded `seed + n * 7919`; the
    splits, drawn by the caller, are the same for every member. `sources`: each training slice's
    source, for `optimisation.source_balance`."""
    if network.members > 1:
        single = dataclasses.replace(network, members=1)
        n = network.members
        fits = [
            fit(
                x_train,
                y_train,
                x_val,
                y_val,
                network=single,
                optimisation=optimisation,
                seed=seed,
                member=member + i,
                prefix=f"{prefix}[member {i + 1}/{n}] ",
                loader_threads=loader_threads,
                sources=sources,
            )
            for i in range(n)
        ]
        ensemble = build_model(network, x_train.shape[1])
        ensemble.set_weights([w for f in fits for w in f.model.get_weights()])
        return FitResult(
            ensemble,
            fits[0].history,
            fits[0].best_epoch,
            sum(f.seconds for f in fits),
            tuple(f.best_epoch for f in fits),
            tuple(f.history for f in fits),
        )
    fit_seed = seed + MEMBER_SEED_STRIDE * member
    keras.utils.set_random_seed(fit_seed)
    model = build_model(network, x_train.shape[1])
    batches = AugmentedBatches(
        x_train,
        y_train,
        batch_size=optimisation.batch_size,
        strength=optimisation.augment_strength,
        seed=fit_seed,
        weights=sample_weights(
            y_train,
            optimisation.balance_classes,
            sources=sources,
            source_balance=optimisation.source_balance,
        ),
        workers=loader_threads,
    )
    optimizer = keras.optimizers.AdamW(
        _schedule(optimisation, len(batches)), weight_decay=optimisation.weight_decay
    )
    loss = keras.losses.BinaryCrossentropy(label_smoothing=optimisation.label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.AUC(name="auc")])
    callbacks: list[keras.callbacks.Callback] = []
    if not optimisation.keep_last:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                "val_auc", mode="max", patience=optimisation.patience, restore_best_weights=True
            )
        )
    callbacks.append(EpochPrinter(optimisation.epochs, prefix))
    started = time.perf_counter()
    history = model.fit(
        batches,
        validation_data=(x_val, y_val.astype(np.float32)),
        validation_batch_size=128,
        epochs=optimisation.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    kept_best = hist.get("val_auc") and not optimisation.keep_last
    best = int(np.argmax(hist["val_auc"])) + 1 if kept_best else len(hist["loss"])
    return FitResult(model, hist, best, time.perf_counter() - started)


def predict(model: keras.Model, inputs: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """P(tumour) per input, float64 (n,)."""
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.float64)
    out = [model.predict_on_batch(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    probs: np.ndarray = np.concatenate([np.asarray(o).reshape(-1) for o in out]).astype(np.float64)
    return probs
