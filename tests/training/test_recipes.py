"""Recipes: every setting of a model as data, changed one named field at a time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from training.backend import import_backend

import_backend()

from training.card import ModelCard, upgrade  # noqa: E402
from training.recipes import GROUPS, RECIPES, SEED, SHIPPED, Recipe, SettingError, split_assignments  # noqa: E402
from training.train import sample_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_recipe_is_the_shipped_models_every_setting() -> None:
    """The shipped card, read as this version reads it, holds recipe `shipped` setting for setting."""
    card = ModelCard.load(REPO / "models" / "brainscan.card.json")
    assert card.recipe == SHIPPED.to_dict()
    assert Recipe.from_dict(card.recipe) == SHIPPED


def test_every_setting_has_one_name_in_one_group() -> None:
    for recipe in RECIPES.values():
        names = [key for group in GROUPS for key in getattr(recipe, group).__dataclass_fields__]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_a_setting_changes_its_own_group_alone() -> None:
    changed = SHIPPED.with_settings(("weight_decay=0.001", "kernel_l2=0", "size=192", "members=1"))
    assert changed.optimisation.weight_decay == 0.001 and changed.network.kernel_l2 == 0.0
    assert changed.input.size == 192 and changed.network.members == 1
    assert changed.policy == SHIPPED.policy and changed.name == "shipped"
    assert SHIPPED.with_settings(()) == SHIPPED


def test_an_unknown_setting_or_a_value_that_does_not_parse_is_refused_not_guessed() -> None:
    with pytest.raises(SettingError, match="no_such_field"):
        SHIPPED.with_settings(("no_such_field=1",))
    with pytest.raises(SettingError, match="mixup"):  # a dropped experiment's setting is gone
        SHIPPED.with_settings(("mixup=0.2",))
    recipe = SHIPPED.with_settings(("keep_last=no", "balance_classes=off"))
    assert recipe.optimisation.keep_last is False and recipe.optimisation.balance_classes is False
    for bad in ("keep_last=maybe", "epochs=thirty", "widths=32,wide"):
        with pytest.raises(SettingError, match=bad.split("=")[0]):
            SHIPPED.with_settings((bad,))


def test_a_setting_given_twice_differently_is_refused_and_a_groups_checks_see_all_its_settings() -> None:
    with pytest.raises(SettingError, match="--epochs 5 and epochs=9 differ"):
        SHIPPED.with_settings(("epochs=9",), {"epochs": 5})
    with pytest.raises(SettingError, match="epochs=5 and epochs=9 differ"):
        SHIPPED.with_settings(("epochs=5", "epochs=9"))
    assert SHIPPED.with_settings(("epochs=5",), {"epochs": 5, "seed": None}).optimisation.epochs == 5
    with pytest.raises(SettingError, match="leave nothing to train on"):
        SHIPPED.with_settings(("val_fraction=0.5", "test_fraction=0.5"))
    # whatever the order, the policy sees both fractions together
    for order in (("test_fraction=0.4", "val_fraction=0.1"), ("val_fraction=0.1", "test_fraction=0.4")):
        assert SHIPPED.with_settings(order).policy.test_fraction == 0.4


def test_named_options_apply_over_the_seed_recipe() -> None:
    seed = SEED.with_settings((), {"size": 96, "epochs": 5, "learning_rate": None})
    assert (seed.input.size, seed.network.arch, seed.optimisation.epochs) == (96, "seed", 5)
    assert (seed.optimisation.learning_rate, seed.optimisation.augment_strength) == (1e-3, 0.0)


def test_comma_separated_settings_split_at_fields_not_inside_a_tuple() -> None:
    assert split_assignments("widths=32,64,128,256,dropout=0.2") == ("widths=32,64,128,256", "dropout=0.2")
    assert split_assignments("dropout=0.2, blocks=1,1,2,1,") == ("dropout=0.2", "blocks=1,1,2,1")
    assert split_assignments("") == ()
    recipe = SHIPPED.with_settings(split_assignments("widths=32,64,128,256,blocks=1,1,1,1,dropout=0.2"))
    assert (recipe.network.widths, recipe.network.dropout) == ((32, 64, 128, 256), 0.2)
    with pytest.raises(SettingError, match="one of each per stage"):
        SHIPPED.with_settings(("widths=32,64",))


def test_class_weights_balance_the_two_classes() -> None:
    labels = np.array([1] * 100 + [0] * 50)
    weights = sample_weights(labels, True)
    np.testing.assert_allclose(weights, np.where(labels == 1, 150 / 200, 150 / 100))
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum())
    assert np.all(sample_weights(labels, False) == 1)


def test_source_balance_evens_out_sources_then_classes() -> None:
    labels = np.array([1] * 60 + [0] * 30 + [1] * 5 + [0] * 5)
    sources = np.array(["big"] * 90 + ["small"] * 10)
    unbalanced = sample_weights(labels, True, sources=sources, source_balance=0.0)
    np.testing.assert_allclose(unbalanced, sample_weights(labels, True))
    full = sample_weights(labels, False, sources=sources, source_balance=1.0)
    assert full[sources == "big"].sum() == pytest.approx(full[sources == "small"].sum())
    assert full.mean() == pytest.approx(1.0)
    both = sample_weights(labels, True, sources=sources, source_balance=0.5)
    assert both[labels == 1].sum() == pytest.approx(both[labels == 0].sum())
    per_image = {name: both[(sources == name) & (labels == 1)][0] for name in ("big", "small")}
    assert per_image["small"] / per_image["big"] == pytest.approx(3.0)  # sqrt(90 / 10)


def test_a_card_from_before_recipes_reads_in_the_recipe_layout() -> None:
    old = json.loads((Path(__file__).parent / "card_before_recipes.json").read_text())
    new = upgrade(old)
    # the card of the model shipped on 2026-12-02 (kept under tests/models/) as it was upgraded
    kept = ModelCard.load(REPO / "tests" / "models" / "trained-without-lgg-flair.card.json")
    assert new["recipe"] == {**kept.recipe, "name": ""}
    assert new["training"]["member_best_epochs"] == [30, 30] and "mixup" not in new["training"]
    assert "architecture" not in new and "recall_target" not in new
    assert upgrade(new) is new
    seed_card = {**old, "architecture": {"arch": "seed", "input_size": 160}}
    assert upgrade(seed_card)["recipe"]["network"]["dropout"] == 0.5  # fixed in the seed network then


@pytest.mark.parametrize(
    ("section", "setting"),
    [("training", {"mixup": 0.2}), ("architecture", {"flip_tta": True}), ("input", {"equalise": 1.0})],
)
def test_a_card_made_with_a_dropped_experiment_is_refused_by_name(section: str, setting: dict) -> None:
    old = json.loads((Path(__file__).parent / "card_before_recipes.json").read_text())
    old[section] = {**old[section], **setting}
    with pytest.raises(ValueError, match=f"made with {next(iter(setting))}="):
        upgrade(old)


def test_the_seed_recipe_is_the_baseline_network() -> None:
    assert SEED.network.arch == "seed" and SEED.input.crop is False and SEED.input.size == 128
    assert dataclasses.replace(SEED.policy, recall_target=SHIPPED.policy.recall_target) == SHIPPED.policy


def test_the_edge_rule_leaves_a_scans_first_and_last_tumour_slice_out_of_the_recall_target() -> None:
    """Experiment 39: a sliver at a tumour's edge no longer drags the threshold down."""
    from training.crossval import policy_threshold

    labels = np.array([1] * 10 + [0] * 10)
    probs = np.array([0.9] * 8 + [0.6, 0.02] + [0.1] * 9 + [0.5])
    edge = np.zeros(20, dtype=bool)
    edge[9] = True  # the 0.02 tumour slice ends its scan's tumour
    counted = SHIPPED.with_settings(("recall_counts_edges=true",)).policy
    assert policy_threshold(labels, probs, edge, counted) == 0.02
    assert policy_threshold(labels, probs, edge, SHIPPED.policy) == 0.6  # the shipped rule
