"""An owner's own trained model, assessed by ``mldoctor-assess``: reading what the owner gives
(:mod:`.settings`), loading the model without running anything in the weights file (:mod:`.model`),
and the model as a cell's target (:mod:`.target`)."""

from mldoctor_bench.owner.model import NoEmbedding, OwnerClassifier, OwnerModelError
from mldoctor_bench.owner.settings import Owner, assess_settings, owner_config, read_owner
from mldoctor_bench.owner.target import OwnerTarget, with_channels

__all__ = [
    "NoEmbedding",
    "Owner",
    "OwnerClassifier",
    "OwnerModelError",
    "OwnerTarget",
    "assess_settings",
    "owner_config",
    "read_owner",
    "with_channels",
]
