"""Training settings given on the command line (`--set FIELD=VALUE`, bench/variants.py --variant)."""

from __future__ import annotations

import click
import pytest

from brainscan.cli.train import _configs, apply_overrides


def test_an_ensemble_member_reseeds_the_fit_but_keeps_the_splits() -> None:
    spec, model_cfg, cfg = _configs("brainscan", None, {})
    assert cfg.member == 0 and cfg.fit_seed == cfg.seed  # the shipped recipe's fit is member 0
    _, _, member = apply_overrides((spec, model_cfg, cfg), ("member=2", "epochs=40"))
    assert member.member == 2 and member.epochs == 40
    assert member.seed == cfg.seed  # the seed every split is drawn from
    first = apply_overrides((spec, model_cfg, cfg), ("member=1",))[2]
    assert member.fit_seed not in (cfg.fit_seed, first.fit_seed)


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="no_such_field"):
        apply_overrides(_configs("brainscan", None, {}), ("no_such_field=1",))


def test_an_ensemble_is_an_architecture_setting_saved_in_the_card() -> None:
    spec, model_cfg, cfg = _configs("brainscan", None, {})
    assert model_cfg.members == 1  # the shipped recipe: one network
    _, ensemble, same = apply_overrides((spec, model_cfg, cfg), ("members=3",))
    assert ensemble.members == 3 and same == cfg
    assert type(ensemble).from_dict(ensemble.to_dict()) == ensemble


def test_size_and_input_size_are_one_setting() -> None:
    """The preprocessed slice is the network's input: either name sets both, a mismatch is refused."""
    configs = _configs("brainscan", None, {})
    for name in ("size", "input_size"):
        spec, model_cfg, cfg = apply_overrides(configs, (f"{name}=192", "epochs=3"))
        assert spec.size == model_cfg.input_size == 192 and cfg.epochs == 3
    spec, model_cfg, _ = apply_overrides(configs, ("size=96", "input_size=96"))
    assert spec.size == model_cfg.input_size == 96
    with pytest.raises(click.BadParameter, match="size=192 and input_size=160 differ"):
        apply_overrides(configs, ("size=192", "input_size=160"))
    spec, model_cfg, _ = apply_overrides(configs, ("members=2",))
    assert spec.size == model_cfg.input_size == 160  # untouched when neither is set
