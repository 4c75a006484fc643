"""Fit the CNN on arrays: augmentation, class balance, cosine schedule, early stopping on val AUC."""

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
from training.domain import DomainBatches, ReversalSchedule, adversarial_model
from training.model import ModelConfig, build_model
from training.subtype import SubtypeBatches, subtype_labels, subtype_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; saved in the card."""

    epochs: int = 30  # the cosine schedule decays to ~0 by the last epoch
    batch_size: int = 32  # small batches regularise; 2 CPU cores gain nothing from larger
    learning_rate: float = 2e-3  # peak of the cosine schedule (AdamW)
    warmup_epochs: int = 2  # linear warm-up protects batch-norm statistics early on
    weight_decay: float = 1e-4  # AdamW decoupled decay
    label_smoothing: float = 0.05  # softer targets: better-ranked probabilities for thresholding
    patience: int = 12  # epochs without a better validation AUC before stopping early
    keep_last: bool = False  # keep the last epoch's weights (learning rate decayed to ~0), never
    # stop early; validation AUC is still recorded each epoch but picks nothing
    augment_strength: float = 1.0  # scales every augmentation range
    style_augment: float = 0.0  # chance of each quality degradation (blur, resolution, JPEG, noise)
    contrast_augment: float = 0.0  # chance of a random tissue-contrast curve (another sequence's look)
    mixup: float = 0.0  # Beta(a, a) of mixup within each batch (0: off; 0.2-0.4 usual)
    lesions: float = 0.0  # chance a clear training slice gets a synthetic mass and a tumour label
    focal_gamma: float = 0.0  # focal loss: down-weight well-classified slices by (1 - p_t)**gamma
    ema: float = 0.0  # momentum of an exponential moving average of the weights (0: off; ~0.99)
    distill: float = 0.0  # weight of a teacher's scores in the targets (0: off, 1: teacher alone)
    distill_members: int = 2  # the teacher: this many re-seeded fits of the recipe, averaged
    domain_adapt: float = 0.0  # peak gradient reversal of a critic telling the training sources
    # from unlabelled target-source slices (DANN, `training.domain`; 0: off; needs `unlabelled`)
    subtype_aux: float = 0.0  # loss weight of a training-only tumour-type head (glioma, meningioma,
    # pituitary, none) on the pooled features (`training.subtype`; 0: off)
    balance_classes: bool = True  # weight classes inversely to their frequency
    source_balance: float = 0.0  # within each class, weight sources by count**-p (0: off, 1: equal)
    val_fraction: float = 0.15  # share of groups held out to early-stop and tune the threshold
    test_fraction: float = 0.15  # share of groups held out for the card's test figures (0: none)
    recall_target: float = 0.99  # the threshold is the highest one meeting this recall on val
    specificity_floor: float = 0.0  # then lowered while val specificity stays >= this (0: off)
    seed: int = 1337
    member: int = 0  # ensemble member n > 0: initialisation and augmentation re-seeded, splits kept

    @property
    def fit_seed(self) -> int:
        """Seed of initialisation and augmentation order; members of one ensemble share `seed`
        (hence every split) and differ here."""
        return self.seed + 7919 * self.member

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**known_settings(cls, data, "training"))


@dataclass
class FitResult:
    """A trained model and what happened while training it."""

    model: keras.Model
    history: dict[str, list[float]]  # an ensemble's: its first member's
    best_epoch: int  # the epoch whose weights were kept (keep_last: the last); an ensemble's: member 0's
    seconds: float
    member_best_epochs: tuple[int, ...] = ()  # an ensemble's, one per member
    member_histories: tuple[dict[str, list[float]], ...] = ()  # an ensemble's, one per member
    teacher_best_epochs: tuple[int, ...] = ()  # a distilled fit's teacher, one per member


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr: a progress display that survives logs and pipes."""

    def __init__(self, epochs: int, prefix: str = "", shown: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.epochs, self.prefix, self.started = epochs, prefix, 0.0
        self.shown = shown or _SHOWN

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {logs[k]:.4f}" for k in self.shown if k in logs]
        took = time.perf_counter() - self.started
        line = f"{self.prefix}epoch {epoch + 1:>3}/{self.epochs}  " + "  ".join(parts)
        print(f"{line}  ({took:.1f} s)", file=sys.stderr, flush=True)


_SHOWN = ("loss", "auc", "val_loss", "val_auc")


class _RenameLogs(keras.callbacks.Callback):
    """Renames epoch logs in place (a multi-output graph's "tumour_auc" to "auc"), before the
    callbacks after it, and the history, read them."""

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for old, new in self.names.items():
            if logs is not None and old in logs:
                logs[new] = logs.pop(old)


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


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, cfg.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * 0.05,
        decay_steps=total - warmup,
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )


def loss_for(cfg: TrainConfig) -> keras.losses.Loss:
    """Cross-entropy with label smoothing; with focal_gamma > 0 the focal form, whose loss on a
    slice already scored right shrinks by (1 - p_t)**gamma, so training dwells on the hard ones."""
    if cfg.focal_gamma > 0:
        return keras.losses.BinaryFocalCrossentropy(
            gamma=cfg.focal_gamma, label_smoothing=cfg.label_smoothing
        )
    return keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)


def sample_weights(labels: np.ndarray, sources: np.ndarray | None, cfg: TrainConfig) -> np.ndarray:
    """One loss weight per training sample. balance_classes: each class weighs as much in total as
    the other. source_balance p > 0: within each class, samples of a source with n images of that
    class weigh in proportion to n**-p, the class's total kept (p = 1: every source weighs the same
    in total; 0.5 halfway, in logs). A rare source's images then count for more than its share."""
    weights = np.ones(len(labels), dtype=np.float64)
    if cfg.balance_classes:
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = len(labels) / (2 * np.maximum(counts[labels], 1))
    if cfg.source_balance > 0 and sources is not None:
        for label in np.unique(labels):
            members = labels == label
            _, index, per_source = np.unique(sources[members], return_inverse=True, return_counts=True)
            raw = per_source[index].astype(np.float64) ** -cfg.source_balance
            weights[members] *= raw * (members.sum() / raw.sum())
    return weights


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    prefix: str = "",
    loader_threads: int = 2,
    sources: np.ndarray | None = None,
    unlabelled: np.ndarray | None = None,
    categories: np.ndarray | None = None,
) -> FitResult:
    """Train from scratch; keep the weights of the epoch with the best validation AUC. An ensemble
    (model_cfg.members > 1) trains each member apart, as ensemble members cfg.member, +1, ..., and
    returns one network that averages them. With cfg.distill > 0 an ensemble teacher of
    cfg.distill_members is trained first and the one network returned learns its scores
    (`_fit_distilled`). `sources`: each training image's source (folder), for cfg.source_balance.
    `unlabelled`: slices of a target source, read without labels when cfg.domain_adapt > 0.
    `categories`: each training image's label folder (glioma, no, ...), for cfg.subtype_aux."""
    if cfg.domain_adapt > 0 and (unlabelled is None or len(unlabelled) == 0):
        raise ValueError(
            f"domain_adapt={cfg.domain_adapt} needs unlabelled slices of a target "
            "source: a new site's (brainscan train --adapt-to FOLDER) or a held-out "
            "source's (bench/variants.py --holdout SOURCE)"
        )
    if model_cfg.members > 1 and cfg.distill > 0:
        raise ValueError(
            f"distill={cfg.distill} trains one network from an ensemble teacher; with "
            f"members={model_cfg.members} set distill_members instead"
        )
    if cfg.subtype_aux > 0 and (cfg.domain_adapt > 0 or cfg.distill > 0):
        raise ValueError("subtype_aux is not combined with domain_adapt or distill")
    if cfg.subtype_aux > 0 and categories is None:
        raise ValueError("subtype_aux needs each training image's folder (its tumour type)")
    if model_cfg.members > 1:
        return _fit_ensemble(
            x_train,
            y_train,
            x_val,
            y_val,
            model_cfg=model_cfg,
            cfg=cfg,
            prefix=prefix,
            loader_threads=loader_threads,
            sources=sources,
            unlabelled=unlabelled,
            categories=categories,
        )
    if cfg.distill > 0:
        if cfg.distill_members < 1:
            raise ValueError(f"distill_members={cfg.distill_members}: the teacher needs a member")
        if cfg.domain_adapt > 0:
            raise ValueError("distill and domain_adapt are not combined")
        return _fit_distilled(
            x_train,
            y_train,
            x_val,
            y_val,
            model_cfg=model_cfg,
            cfg=cfg,
            prefix=prefix,
            loader_threads=loader_threads,
            sources=sources,
        )
    return _fit_single(
        x_train,
        y_train,
        x_val,
        y_val,
        model_cfg=model_cfg,
        cfg=cfg,
        prefix=prefix,
        loader_threads=loader_threads,
        sources=sources,
        unlabelled=unlabelled,
        categories=categories,
    )


def _fit_single(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    prefix: str,
    loader_threads: int,
    sources: np.ndarray | None,
    teacher: keras.Model | None = None,
    unlabelled: np.ndarray | None = None,
    categories: np.ndarray | None = None,
) -> FitResult:
    keras.utils.set_random_seed(cfg.fit_seed)
    model = build_model(model_cfg)
    scorer = None
    if teacher is not None:
        # Built once here, before the loader threads share it (its first call compiles).
        scorer = teacher.predict_on_batch
        scorer(x_train[:1])
    batches = AugmentedBatches(
        x_train,
        y_train,
        batch_size=cfg.batch_size,
        strength=cfg.augment_strength,
        seed=cfg.fit_seed,
        weights=sample_weights(y_train, sources, cfg),
        style=cfg.style_augment,
        contrast=cfg.contrast_augment,
        mixup=cfg.mixup,
        lesions=cfg.lesions,
        teacher=scorer,
        teacher_weight=cfg.distill,
        workers=loader_threads,
    )
    optimizer = keras.optimizers.AdamW(
        _schedule(cfg, len(batches)),
        weight_decay=cfg.weight_decay,
        use_ema=cfg.ema > 0,
        ema_momentum=cfg.ema or 0.99,
    )
    auc = keras.metrics.AUC(name="auc")
    # With ema, the averaged weights are swapped into the model for each validation and again at
    # each epoch's end, before the stopper keeps a copy, and out for the next epoch's training:
    # early stopping then scores, picks and returns the best epoch's averaged weights.
    callbacks: list[keras.callbacks.Callback] = (
        [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema > 0 else []
    )
    # Training AUC counts every non-zero target as a tumour: meaningless on a teacher's scores.
    shown = tuple(k for k in _SHOWN if k != "auc") if teacher is not None else _SHOWN
    trained: keras.Model = model
    data: keras.utils.PyDataset = batches
    validation: tuple[Any, ...] = (x_val, y_val.astype(np.float32))
    if cfg.domain_adapt > 0:
        assert unlabelled is not None  # checked by fit()
        trained, reversal = adversarial_model(model)
        data = DomainBatches(
            batches,
            unlabelled,
            target_batch=cfg.batch_size // 2,
            seed=cfg.fit_seed + 1,
            workers=loader_threads,
        )
        validation = _compile_with_second_output(
            trained,
            x_val,
            y_val,
            "domain",
            keras.losses.BinaryCrossentropy(),
            1.0,
            cfg=cfg,
            optimizer=optimizer,
            auc=auc,
            callbacks=callbacks,
        )
        callbacks.append(ReversalSchedule(reversal, cfg.domain_adapt, cfg.epochs))
        shown = (*shown, "domain_loss")
    elif cfg.subtype_aux > 0:
        assert categories is not None  # checked by fit()
        trained = subtype_model(model)
        data = SubtypeBatches(batches, subtype_labels(categories), workers=loader_threads)
        validation = _compile_with_second_output(
            trained,
            x_val,
            y_val,
            "subtype",
            keras.losses.SparseCategoricalCrossentropy(),
            cfg.subtype_aux,
            cfg=cfg,
            optimizer=optimizer,
            auc=auc,
            callbacks=callbacks,
        )
        shown = (*shown, "subtype_loss")
    else:
        model.compile(optimizer=optimizer, loss=loss_for(cfg), metrics=[auc])
    if not cfg.keep_last:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                "val_auc", mode="max", patience=cfg.patience, restore_best_weights=True
            )
        )
    callbacks.append(EpochPrinter(cfg.epochs, prefix, shown))
    started = time.perf_counter()
    history = trained.fit(
        data,
        validation_data=validation,
        validation_batch_size=128,
        epochs=cfg.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    kept_best = hist.get("val_auc") and not cfg.keep_last
    best = int(np.argmax(hist["val_auc"])) + 1 if kept_best else len(hist["loss"])
    return FitResult(model, hist, best, time.perf_counter() - started)


def _compile_with_second_output(
    trained: keras.Model,
    x_val: np.ndarray,
    y_val: np.ndarray,
    name: str,
    loss: keras.losses.Loss,
    weight: float,
    *,
    cfg: TrainConfig,
    optimizer: keras.optimizers.Optimizer,
    auc: keras.metrics.Metric,
    callbacks: list[keras.callbacks.Callback],
) -> tuple[Any, ...]:
    """Compile a training graph whose outputs are "tumour" and `name` (its loss weighted `weight`)
    and return validation data that scores the tumour output alone. The graph shares the network's
    layers; its "tumour" logs are renamed (a callback appended), so the history, the stopper and
    the plots read as a plain fit's."""
    trained.compile(
        optimizer=optimizer,
        loss={"tumour": loss_for(cfg), name: loss},
        loss_weights={"tumour": 1.0, name: weight},
        # weighted: a slice whose tumour weight is 0 stays out of the AUC too
        weighted_metrics={"tumour": [auc]},
    )
    callbacks.append(_RenameLogs({"tumour_auc": "auc", "val_tumour_auc": "val_auc"}))
    none = np.zeros(len(y_val), dtype=np.float32)
    return (
        x_val,
        {"tumour": y_val.astype(np.float32), name: none},
        {"tumour": np.ones_like(none), name: none},
    )


def _fit_ensemble(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    prefix: str,
    loader_threads: int,
    sources: np.ndarray | None,
    unlabelled: np.ndarray | None,
    categories: np.ndarray | None,
) -> FitResult:
    single = dataclasses.replace(model_cfg, members=1)
    n = model_cfg.members
    fits = [
        fit(
            x_train,
            y_train,
            x_val,
            y_val,
            model_cfg=single,
            cfg=dataclasses.replace(cfg, member=cfg.member + i),
            prefix=f"{prefix}[member {i + 1}/{n}] ",
            loader_threads=loader_threads,
            sources=sources,
            unlabelled=unlabelled,
            categories=categories,
        )
        for i in range(n)
    ]
    ensemble = build_model(model_cfg)
    ensemble.set_weights([w for f in fits for w in f.model.get_weights()])
    return FitResult(
        ensemble,
        fits[0].history,
        fits[0].best_epoch,
        sum(f.seconds for f in fits),
        tuple(f.best_epoch for f in fits),
        tuple(f.history for f in fits),
    )


def _fit_distilled(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    prefix: str,
    loader_threads: int,
    sources: np.ndarray | None,
) -> FitResult:
    """Ensemble distillation: fit a teacher of cfg.distill_members re-seeded copies of the recipe
    (members cfg.member, +1, ...; the same as `members=n` would ship), then one network, seeded as
    member cfg.member, whose every training target mixes the label with the teacher's score of the
    same augmented slice ("consistent views"), so it learns the ensemble's ranking at one network's
    inference cost. Early stopping and the returned weights follow the student's validation AUC."""
    plain = dataclasses.replace(cfg, distill=0.0)
    teacher = fit(
        x_train,
        y_train,
        x_val,
        y_val,
        model_cfg=dataclasses.replace(model_cfg, members=cfg.distill_members),
        cfg=plain,
        prefix=f"{prefix}[teacher] ",
        loader_threads=loader_threads,
        sources=sources,
    )
    student = _fit_single(
        x_train,
        y_train,
        x_val,
        y_val,
        model_cfg=model_cfg,
        cfg=cfg,
        prefix=f"{prefix}[student] ",
        loader_threads=loader_threads,
        sources=sources,
        teacher=teacher.model,
    )
    return dataclasses.replace(
        student,
        seconds=teacher.seconds + student.seconds,
        teacher_best_epochs=teacher.member_best_epochs or (teacher.best_epoch,),
    )


def predict(
    model: keras.Model, inputs: np.ndarray, *, flip_tta: bool = False, batch_size: int = 128
) -> np.ndarray:
    """P(tumour) per input, float64 (n,); with flip_tta the mean over the slice and its mirror."""
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.float64)
    out = [model.predict_on_batch(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    probs = np.concatenate([np.asarray(o).reshape(-1) for o in out]).astype(np.float64)
    if flip_tta:
        probs = (probs + predict(model, np.ascontiguousarray(inputs[:, :, ::-1]))) / 2
    return probs
