"""Compose every config in the tree: a broken option fails here, not in the middle of a sweep."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mldoctor_bench.cell.plan import plan, selected

CONF = Path(__file__).resolve().parents[1] / "src" / "mldoctor_bench" / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides):
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group", ["dataset", "arch", "defense", "profile"])
def test_every_single_choice_composes_and_resolves(group):
    for option in options(group):
        cfg = compose_with(f"{group}={option}", "device=cpu")
        plain = OmegaConf.to_container(cfg, resolve=True)
        chosen = plain["profile_name"] if group == "profile" else plain[group]["name"]
        assert chosen == option


@pytest.mark.parametrize("group", ["attack", "threat_model"])
def test_every_multi_select_option_composes(group):
    for option in options(group):
        cfg = compose_with(f"{group}={option}")
        assert selected(cfg, group) == [option]
        OmegaConf.to_container(cfg, resolve=True)


def test_list_selection_and_nested_override():
    cfg = compose_with("threat_model=[blackbox_shadow,whitebox_shadow]", "attack.membership.epochs=9")
    assert selected(cfg, "threat_model") == ["blackbox_shadow", "whitebox_shadow"]
    assert cfg.attack.membership.epochs == 9


def test_profiles_differ_and_command_line_wins():
    quick, paper = compose_with("profile=quick"), compose_with("profile=paper")
    assert quick.train.epochs < paper.train.epochs
    assert paper.attack.membership.lr == 1e-5  # the paper's attack-model recipe
    assert compose_with("profile=paper", "train.epochs=3").train.epochs == 3


def test_plan_hash_ignores_locations_but_not_settings(tmp_path):
    a = plan(compose_with("device=cpu", f"results_dir={tmp_path}/a"))
    b = plan(compose_with("device=cpu", f"results_dir={tmp_path}/b"))
    c = plan(compose_with("device=cpu", "train.epochs=7"))
    assert a.config_hash == b.config_hash != c.config_hash


def test_plan_rejects_unavailable_cuda():
    import torch

    from mldoctor_bench.cell import ConfigError

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        plan(compose_with("device=cuda"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_names_real_choices(experiment):
    cfg = compose_with(f"+experiment={experiment}")
    OmegaConf.to_container(cfg, resolve=True)
    p = plan(cfg)  # raises unless attacks, threat models, dataset and arch are all registered
    assert p.attacks and p.threat_models
