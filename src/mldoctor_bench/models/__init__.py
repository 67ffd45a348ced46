"""Architectures: a registry of builders returning :class:`Classifier` modules."""

from mldoctor_bench.models.base import ARCHS, Classifier, build_model
from mldoctor_bench.models import simple_cnn as _simple_cnn  # noqa: F401  (registers entries)

__all__ = ["ARCHS", "Classifier", "build_model"]
