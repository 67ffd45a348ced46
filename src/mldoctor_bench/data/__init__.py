"""Datasets: a registry of loaders returning :class:`ImageData`, and the four-quarter split."""

from mldoctor_bench.data.base import DATASETS, DataUnavailableError, ImageData, load_dataset
from mldoctor_bench.data.splits import Splits, four_quarters
from mldoctor_bench.registry import import_submodules

import_submodules(__name__)  # each loader module registers its datasets

__all__ = [
    "DATASETS",
    "DataUnavailableError",
    "ImageData",
    "Splits",
    "four_quarters",
    "load_dataset",
]
