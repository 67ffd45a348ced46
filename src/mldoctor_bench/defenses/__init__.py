"""Defenses: a registry of training-time and output-time defenses, keyed by ``defense=`` names."""

from mldoctor_bench.defenses.base import DEFENSES, Defense, TrainingSet, build_defense
from mldoctor_bench.registry import import_submodules

import_submodules(__name__)  # each defense module registers itself

__all__ = ["DEFENSES", "Defense", "TrainingSet", "build_defense"]
