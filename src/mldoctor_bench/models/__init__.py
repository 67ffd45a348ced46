"""Architectures: a registry of builders returning :class:`Classifier` modules."""

from mldoctor_bench.models.base import ARCHS, Classifier, NoEmbedding, build_model
from mldoctor_bench.registry import import_submodules

import_submodules(__name__)  # each architecture module registers itself

__all__ = ["ARCHS", "Classifier", "NoEmbedding", "build_model"]
