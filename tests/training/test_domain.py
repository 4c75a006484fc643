"""Domain-adversarial training: the reversal layer, its ramp, the mixed batches, the split of the
target source, and a fit that reads target slices without their labels."""

from __future__ import annotations

import dataclasses
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.tiny import TINY_NETWORK
from training.augment import AugmentedBatches
from training.domain import (
    DomainBatches,
    GradientReversal,
    adaptation_split,
    adversarial_model,
    reversal_strength,
)
from training.model import build_model
from training.train import TrainConfig, fit

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


def _slices(n: int, mean: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, 30, (n, 32, 32, 1)), 0, 255).astype(np.uint8)


def test_reversal_is_identity_forward_and_negates_the_gradient() -> None:
    layer = GradientReversal()
    layer.strength.assign(0.7)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.7, -1.4, -2.1]], rtol=1e-6)


def test_ramp_starts_at_zero_and_rises_to_the_peak() -> None:
    values = [reversal_strength(p, 0.5) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(values))
    assert 0.49 < values[-1] <= 0.5


def test_batches_append_unlabelled_target_slices_that_weigh_nothing_for_the_tumour_loss() -> None:
    source = _slices(20, 60, seed=1)
    target = _slices(7, 250, seed=2)  # near white: tell-tale of where a slice came from
    y = np.array([0, 1] * 10)
    labelled = AugmentedBatches(source, y, batch_size=8, strength=0.0, seed=5)
    batches = DomainBatches(labelled, target, target_batch=4, seed=6)
    assert len(batches) == len(labelled) == 3
    x, targets, weights = batches[0]
    assert x.shape == (12, 32, 32, 1) and x.dtype == np.uint8
    assert (x[8:].mean(axis=(1, 2, 3)) > 200).all() and (x[:8].mean(axis=(1, 2, 3)) < 120).all()
    np.testing.assert_array_equal(targets["tumour"][:8], labelled[0][1])
    np.testing.assert_array_equal(weights["tumour"][8:], 0)  # no target label is ever used
    np.testing.assert_array_equal(targets["domain"], [0] * 8 + [1] * 4)
    assert weights["domain"][:8].sum() == pytest.approx(weights["domain"][8:].sum())
    last = batches[2]  # a short last labelled batch: the domains still weigh the same
    assert len(last[0]) == 4 + 4
    assert last[2]["domain"][:4].sum() == pytest.approx(last[2]["domain"][4:].sum())
    np.testing.assert_array_equal(batches[1][0], batches[1][0])  # reproducible
    before = batches[1][0]
    batches.on_epoch_end()
    assert not np.array_equal(batches[1][0], before)  # a new draw every epoch


def test_adaptation_split_cuts_by_group_without_labels() -> None:
    groups = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 9, 9])
    target = np.arange(2, 12)  # groups 1..9
    seen, unseen = adaptation_split(groups, target, seed=3)
    assert sorted(np.concatenate([seen, unseen]).tolist()) == target.tolist()
    assert not set(groups[seen]) & set(groups[unseen])
    assert len(set(groups[seen])) == len(set(groups[target])) // 2
    again = adaptation_split(groups, target, seed=3)
    np.testing.assert_array_equal(seen, again[0])


def test_adversarial_graph_shares_the_network_weights() -> None:
    net = build_model(TINY_NETWORK)
    graph, reversal = adversarial_model(net)
    assert set(graph.output) == {"tumour", "domain"}
    shared = {id(w) for w in net.weights}
    assert shared <= {id(w) for w in graph.weights}
    x = _slices(3, 100, seed=4)
    np.testing.assert_allclose(
        np.asarray(graph.predict_on_batch(x)["tumour"]), np.asarray(net.predict_on_batch(x)), rtol=1e-6
    )
    assert float(reversal.strength) == 0.0


def test_fit_reads_target_slices_and_returns_a_plain_network() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 24)
    x = _slices(48, 90, seed=7)
    x[y == 1, 12:20, 12:20] = 230  # a bright "mass"
    target = _slices(16, 160, seed=8)  # another source: brighter, no labels
    cfg = TrainConfig(epochs=3, batch_size=8, keep_last=True, domain_adapt=1.0, seed=int(rng.integers(1000)))
    result = fit(
        x[:36], y[:36], x[36:], y[36:], model_cfg=TINY_NETWORK, cfg=cfg, loader_threads=1, unlabelled=target
    )
    assert len(result.model.outputs) == 1  # the critic is not part of the returned network
    assert {"auc", "val_auc", "domain_loss"} <= set(result.history)
    assert "tumour_auc" not in result.history
    assert len(result.history["val_auc"]) == 3 and result.best_epoch == 3
    assert np.asarray(result.model.predict_on_batch(target)).shape == (16, 1)
    # the domain loss is trained: its log is a finite cross-entropy, not a constant
    assert np.isfinite(result.history["domain_loss"]).all()


def test_domain_adapt_without_target_slices_is_refused() -> None:
    cfg = TrainConfig(epochs=1, domain_adapt=1.0)
    x, y = _slices(8, 90, seed=1), np.array([0, 1] * 4)
    with pytest.raises(ValueError, match="unlabelled slices of a target source"):
        fit(x, y, x, y, model_cfg=TINY_NETWORK, cfg=cfg)
    with pytest.raises(ValueError, match="not combined"):
        fit(x, y, x, y, model_cfg=TINY_NETWORK, cfg=dataclasses.replace(cfg, distill=0.5), unlabelled=x)


def test_without_domain_adapt_nothing_changes_in_the_plain_fit() -> None:
    x, y = _slices(16, 90, seed=1), np.array([0, 1] * 8)
    cfg = TrainConfig(epochs=1, batch_size=8, keep_last=True)
    result = fit(x, y, x, y, model_cfg=TINY_NETWORK, cfg=cfg, loader_threads=1)
    assert "domain_loss" not in result.history and {"auc", "val_auc"} <= set(result.history)
    assert isinstance(result.model, keras.Model)
