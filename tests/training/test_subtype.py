"""The training-only tumour-type head: labels from folders, batches, the shared graph, and a fit
that learns the types and returns the plain binary network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.training.tiny import TINY_NETWORK
from training.augment import AugmentedBatches
from training.model import build_model
from training.subtype import SUBTYPES, UNKNOWN, SubtypeBatches, subtype_labels, subtype_model
from training.train import TrainConfig, fit

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


def _slices(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(90, 30, (n, 32, 32, 1)), 0, 255).astype(np.uint8)


def test_types_come_from_the_label_folder_and_unknown_tumours_are_marked() -> None:
    folders = np.array(["glioma", "Meningioma", "pituitary", "notumor", "no", "yes", "Y-prefix", ""])
    labels = subtype_labels(folders)
    assert [SUBTYPES[i] for i in labels[:5]] == ["glioma", "meningioma", "pituitary", "none", "none"]
    assert (labels[5:] == UNKNOWN).all()


def test_batches_carry_each_slices_own_type_and_weigh_unknown_types_zero() -> None:
    x = _slices(20, seed=1)
    x[:, 0, 0, 0] = np.arange(20)  # each slice's index, readable in the batch (no augmentation)
    types = np.array([0, 1, 2, 3, UNKNOWN] * 4)
    y = (types != 0).astype(np.int64)
    labelled = AugmentedBatches(x, y, batch_size=8, strength=0.0, seed=3)
    batches = SubtypeBatches(labelled, types)
    assert len(batches) == 3
    for index in range(3):
        xb, targets, weights = batches[index]
        which = xb[:, 0, 0, 0].astype(int)  # the slices this batch holds, in its order
        np.testing.assert_array_equal(targets["tumour"], y[which])
        np.testing.assert_array_equal(targets["subtype"], np.maximum(types[which], 0))
        np.testing.assert_array_equal(weights["subtype"], types[which] != UNKNOWN)
    first = batches[0][0][:, 0, 0, 0].copy()
    batches.on_epoch_end()  # a new order: the types follow the slices
    xb, targets, _ = batches[0]
    assert not np.array_equal(xb[:, 0, 0, 0], first)
    np.testing.assert_array_equal(targets["subtype"], np.maximum(types[xb[:, 0, 0, 0].astype(int)], 0))


def test_mixup_and_synthetic_lesions_are_refused() -> None:
    x, y = _slices(8, seed=1), np.array([0, 1] * 4)
    for setting in ({"mixup": 0.2}, {"lesions": 0.5}):
        labelled = AugmentedBatches(x, y, batch_size=4, strength=0.0, seed=1, **setting)
        with pytest.raises(ValueError, match="mixup or synthetic lesions"):
            SubtypeBatches(labelled, np.zeros(8, dtype=np.int64))


def test_graph_shares_the_network_weights() -> None:
    net = build_model(TINY_NETWORK)
    graph = subtype_model(net)
    assert {id(w) for w in net.weights} <= {id(w) for w in graph.weights}
    x = _slices(3, seed=4)
    out = graph.predict_on_batch(x)
    np.testing.assert_allclose(np.asarray(out["tumour"]), np.asarray(net.predict_on_batch(x)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["subtype"]).sum(axis=1), 1.0, rtol=1e-5)


def test_fit_learns_the_types_and_returns_the_plain_network() -> None:
    types = np.array([0, 1, 2, 3] * 16)
    x = _slices(64, seed=7)
    for t, (r, c) in ((1, (4, 4)), (2, (4, 20)), (3, (20, 12))):  # each type a mass in its place
        x[types == t, r : r + 8, c : c + 8] = 240
    folders = np.array([("notumor", "glioma", "meningioma", "pituitary")[t] for t in types])
    y = (types > 0).astype(np.int64)
    cfg = TrainConfig(
        epochs=8, batch_size=8, keep_last=True, subtype_aux=1.0, warmup_epochs=1, learning_rate=0.01
    )
    result = fit(
        x[:48],
        y[:48],
        x[48:],
        y[48:],
        model_cfg=TINY_NETWORK,
        cfg=cfg,
        loader_threads=1,
        categories=folders[:48],
    )
    assert len(result.model.outputs) == 1  # the head is not part of the returned network
    assert {"auc", "val_auc", "subtype_loss"} <= set(result.history)
    assert "tumour_auc" not in result.history
    losses = result.history["subtype_loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]  # the head was trained


def test_subtype_aux_needs_the_folders_and_combines_with_neither_distill_nor_adaptation() -> None:
    x, y = _slices(8, seed=1), np.array([0, 1] * 4)
    cfg = TrainConfig(epochs=1, batch_size=4, subtype_aux=0.5)
    with pytest.raises(ValueError, match="folder"):
        fit(x, y, x, y, model_cfg=TINY_NETWORK, cfg=cfg, loader_threads=1)
    for other in ({"distill": 0.5}, {"domain_adapt": 0.1}):
        with pytest.raises(ValueError, match="not combined"):
            fit(
                x,
                y,
                x,
                y,
                model_cfg=TINY_NETWORK,
                cfg=dataclasses.replace(cfg, **other),
                unlabelled=x,
                categories=np.array(["no", "yes"] * 4),
            )
