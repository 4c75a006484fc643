"""Training settings given on the command line (`--set FIELD=VALUE`, bench/variants.py --variant)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from brainscan.cli.train import _configs, apply_overrides, split_assignments


def test_an_ensemble_member_reseeds_the_fit_but_keeps_the_splits() -> None:
    spec, model_cfg, cfg = _configs("brainscan")
    assert cfg.member == 0 and cfg.fit_seed == cfg.seed  # the shipped recipe's fit is member 0
    _, _, member = apply_overrides((spec, model_cfg, cfg), ("member=2", "epochs=40"))
    assert member.member == 2 and member.epochs == 40
    assert member.seed == cfg.seed  # the seed every split is drawn from
    first = apply_overrides((spec, model_cfg, cfg), ("member=1",))[2]
    assert member.fit_seed not in (cfg.fit_seed, first.fit_seed)


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="no_such_field"):
        apply_overrides(_configs("brainscan"), ("no_such_field=1",))


def test_a_value_that_does_not_parse_is_refused_not_guessed() -> None:
    configs = _configs("brainscan")
    cfg = apply_overrides(configs, ("keep_last=yes", "balance_classes=off"))[2]
    assert cfg.keep_last is True and cfg.balance_classes is False
    for bad in ("keep_last=maybe", "epochs=thirty", "widths=32,wide"):
        with pytest.raises(click.BadParameter, match=bad.split("=")[0]):
            apply_overrides(configs, (bad,))


def test_an_ensemble_is_an_architecture_setting_saved_in_the_card() -> None:
    spec, model_cfg, cfg = _configs("brainscan")
    assert model_cfg.members == 1  # the recipe's default (the shipped model: --set members=2)
    _, ensemble, same = apply_overrides((spec, model_cfg, cfg), ("members=3",))
    assert ensemble.members == 3 and same == cfg
    assert type(ensemble).from_dict(ensemble.to_dict()) == ensemble


def test_every_config_round_trips_and_refuses_a_field_it_does_not_know() -> None:
    """The network, its inputs and its training are rebuilt from a card or a pool worker's dict: a
    field this version lacks would otherwise be dropped and something else rebuilt, silently."""
    names = ("preprocessing", "architecture", "training")
    for config, what in zip(_configs("brainscan"), names, strict=True):
        saved = config.to_dict()
        assert type(config).from_dict(saved) == config
        with pytest.raises(ValueError, match=rf"{what} setting\(s\) attention unknown .* needs a newer one"):
            type(config).from_dict({**saved, "attention": "transformer"})


def test_size_and_input_size_are_one_setting() -> None:
    """The preprocessed slice is the network's input: either name sets both, a mismatch is refused."""
    configs = _configs("brainscan")
    for name in ("size", "input_size"):
        spec, model_cfg, cfg = apply_overrides(configs, (f"{name}=192", "epochs=3"))
        assert spec.size == model_cfg.input_size == 192 and cfg.epochs == 3
    spec, model_cfg, _ = apply_overrides(configs, ("size=96", "input_size=96"))
    assert spec.size == model_cfg.input_size == 96
    with pytest.raises(click.BadParameter, match="--set size=192 and --set input_size=160 differ"):
        apply_overrides(configs, ("size=192", "input_size=160"))
    spec, model_cfg, _ = apply_overrides(configs, ("members=2",))
    assert spec.size == model_cfg.input_size == 160  # untouched when neither is set


def test_comma_separated_settings_split_at_fields_not_inside_a_tuple() -> None:
    assert split_assignments("widths=32,64,128,256,dropout=0.2") == ("widths=32,64,128,256", "dropout=0.2")
    assert split_assignments("dropout=0.2, blocks=1,1,2,1,") == ("dropout=0.2", "blocks=1,1,2,1")
    assert split_assignments("") == ()
    settings = split_assignments("widths=32,64,128,256,dropout=0.2")
    _, model_cfg, _ = apply_overrides(_configs("brainscan"), settings)
    assert (model_cfg.widths, model_cfg.dropout) == ((32, 64, 128, 256), 0.2)


def test_sample_weights_balance_classes_and_optionally_sources() -> None:
    import numpy as np

    from training.train import sample_weights

    _, _, cfg = _configs("brainscan")
    labels = np.array([1] * 90 + [1] * 10 + [0] * 50)
    sources = np.array(["big"] * 90 + ["rare"] * 10 + ["big"] * 40 + ["rare"] * 10)
    plain = sample_weights(labels, sources, cfg)  # the shipped recipe: classes only
    np.testing.assert_allclose(plain, np.where(labels == 1, 150 / 200, 150 / 100))
    assert sample_weights(labels, None, cfg)[0] == plain[0]
    assert np.all(sample_weights(labels, sources, dataclasses.replace(cfg, balance_classes=False)) == 1)
    for p in (0.5, 1.0):
        w = sample_weights(labels, sources, dataclasses.replace(cfg, source_balance=p))
        for label in (0, 1):  # each class keeps its total weight
            assert w[labels == label].sum() == pytest.approx(plain[labels == label].sum())
        rare, big = w[90], w[0]  # tumours: 10 rare against 90 big
        assert rare / big == pytest.approx(9.0**p)
    equal = sample_weights(labels, sources, dataclasses.replace(cfg, source_balance=1.0))
    tumours = labels == 1
    assert equal[tumours & (sources == "rare")].sum() == pytest.approx(
        equal[tumours & (sources == "big")].sum()
    )  # p = 1: every source weighs the same


def test_a_field_given_twice_differently_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from brainscan.cli import main

    out = str(tmp_path / "m.keras")
    for args, message in (
        (("--size", "128", "--set", "input_size=192"), "--size 128 and --set input_size=192 differ"),
        (("--epochs", "5", "--set", "epochs=9"), "--epochs 5 and --set epochs=9 differ"),
        (("--set", "epochs=5", "--set", "epochs=9"), "--set epochs=5 and --set epochs=9 differ"),
        (("--learning-rate", "0.002", "--set", "learning_rate=0.001"), "give learning_rate once"),
        (("--set", "equalise=1.5"), "--set equalise=1.5: equalise is a share between 0 and 1, not 1.5"),
        (("--recipe", "seed", "--set", "equalise=0.5"), "equalise needs normalise"),
        (("--set", "domain_adapt=1.0"), "name its folder with --adapt-to"),
        (("--adapt-to", str(tmp_path), "--set", "distill=0.5"), "and distill are not combined"),
        (("--adapt-to", str(tmp_path), "--set", "domain_adapt=0"), "domain_adapt=0 turns the adaptation off"),
    ):
        result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", out, *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "m.keras").exists()


def test_named_options_apply_over_the_recipe_and_agree_with_set() -> None:
    spec, model_cfg, cfg = apply_overrides(
        _configs("seed"), ("epochs=5", "size=96"), {"size": 96, "epochs": 5, "learning_rate": None}
    )
    assert (spec.size, model_cfg.input_size, model_cfg.arch) == (96, 96, "seed")
    assert (cfg.epochs, cfg.learning_rate, cfg.augment_strength) == (5, 1e-3, 0.0)  # seed's own
    _, _, cfg = apply_overrides(_configs("brainscan"), (), {"learning_rate": 0.001, "seed": 7})
    assert (cfg.learning_rate, cfg.seed, cfg.epochs) == (0.001, 7, 30)


def test_a_configs_checks_see_all_its_settings_whatever_their_order() -> None:
    for order in (("equalise=0.5", "normalise=true"), ("normalise=true", "equalise=0.5")):
        spec, _, _ = apply_overrides(_configs("seed"), order)  # the seed recipe does not normalise
        assert (spec.normalise, spec.equalise) == (True, 0.5)
    _, model_cfg, cfg = apply_overrides(_configs("brainscan"), ("weight_decay=0.001",))
    assert (model_cfg.weight_decay, cfg.weight_decay) == (0.001, 1e-4)  # the first config's field


def test_focal_loss_dwells_on_the_hard_slices() -> None:
    import numpy as np

    from training.train import loss_for

    _, _, cfg = _configs("brainscan")
    y = np.array([[1.0], [1.0]])
    scores = np.array([[0.95], [0.30]])  # an easy tumour and a nearly missed one
    plain = loss_for(cfg)
    focal = loss_for(dataclasses.replace(cfg, focal_gamma=2.0))

    def per_slice(loss: Callable[..., Any]) -> np.ndarray:
        return np.array([float(loss(y[i : i + 1], scores[i : i + 1])) for i in range(2)])

    easy_plain, hard_plain = per_slice(plain)
    easy_focal, hard_focal = per_slice(focal)
    assert easy_focal / hard_focal < easy_plain / hard_plain / 5  # the hard one counts far more
