from pathlib import Path

import pytest

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.data import DATASETS
from mldoctor_bench.models import ARCHS, build_model
from mldoctor_bench.registry import Registry, UnknownEntryError
from mldoctor_bench.threat_models import THREAT_MODELS


def test_unknown_name_lists_choices():
    reg: Registry[int] = Registry("widget")
    reg.register("b")(1)
    reg.register("a")(2)
    with pytest.raises(UnknownEntryError, match="unknown widget 'c'; choose one of: a, b"):
        reg.get("c")


def test_duplicate_registration_is_refused():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_registries_hold_the_foundation_entries():
    assert "mnist5k" in DATASETS
    assert "simple_cnn" in ARCHS
    assert "membership" in ATTACKS
    assert {
        "blackbox_shadow",
        "blackbox_partial",
        "whitebox_shadow",
        "whitebox_partial",
        "whitebox_none",
        "blackbox_label_only",
    } <= set(THREAT_MODELS.names())


@pytest.mark.parametrize("name", ARCHS.names())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_arch_has_the_uniform_shape(name, channels, size):
    import torch

    model = build_model(name, channels, 10, size).eval()  # dropout off: embed and forward agree
    x = torch.randn(2, channels, size, size)
    emb = model.embed(x)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.allclose(model.head(emb), model(x))


def test_registering_a_class_names_it():
    reg: Registry[type] = Registry("widget")

    @reg.register("gizmo")
    class Gizmo:
        pass

    assert Gizmo.name == "gizmo" and reg.get("gizmo") is Gizmo


def test_attacks_and_defenses_carry_their_registry_names():
    from mldoctor_bench.defenses import DEFENSES

    for registry in (ATTACKS, DEFENSES):
        for name in registry.names():
            assert registry.get(name).name == name


CONF = Path(__file__).resolve().parents[1] / "src" / "mldoctor_bench" / "conf"


def registries():
    from mldoctor_bench.defenses import DEFENSES

    return {"dataset": DATASETS, "arch": ARCHS, "attack": ATTACKS, "defense": DEFENSES, "threat_model": THREAT_MODELS}


@pytest.mark.parametrize("group", ["dataset", "arch", "attack", "defense", "threat_model"])
def test_config_options_and_registry_names_are_the_same(group):
    options = {p.stem for p in (CONF / group).glob("*.yaml")}
    registered = set(registries()[group].names())
    assert options - registered == set(), f"conf/{group}/ options with no registry entry"
    assert registered - options == set(), f"registered {group} entries with no conf/{group}/*.yaml"


def test_every_attack_declares_a_family_the_reports_judge_or_report():
    from mldoctor_bench.families import FAMILIES
    from mldoctor_bench.report.stats import FAMILY_METRICS
    from mldoctor_bench.report.verdicts import JUDGES

    assert {ATTACKS.get(name).family for name in ATTACKS} <= set(FAMILIES)
    assert set(FAMILY_METRICS) == set(FAMILIES) and set(JUDGES) <= set(FAMILIES)


def test_an_attack_of_an_unknown_family_is_refused_when_registered():
    from mldoctor_bench.attacks.base import Attack, check_family

    reg = Registry("attack", check=check_family)
    odd = type("Odd", (Attack,), {"family": "memberships", "threat_models": ("blackbox_shadow",)})
    with pytest.raises(ValueError, match="family 'memberships', not one the reports know; use one of: membership"):
        reg.register("odd")(odd)
    assert "odd" not in reg


def test_every_defense_has_its_catalog_entry_of_the_same_kind():
    from mldoctor_bench.defense_catalog import BY_NAME, ORDER, check_entry
    from mldoctor_bench.defenses import DEFENSES

    assert sorted(ORDER) == DEFENSES.names()
    assert all(DEFENSES.get(name).kind == BY_NAME[name].kind for name in ORDER)
    with pytest.raises(ValueError, match="has kind 'output', its catalog entry 'training'"):
        check_entry("dp_sgd", type("Wrong", (), {"kind": "output"}))
