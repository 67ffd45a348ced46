"""An owner's own trained model, assessed by ``mldoctor-assess``: reading what the owner gives
(:mod:`.settings`), loading the model without running anything in the weights file (:mod:`.model`),
checking its preprocessing (:mod:`.preprocessing`), the owner's budget for the attacker
(:mod:`.budget`), and the model as a cell's target (:mod:`.target`)."""

from mldoctor_bench.owner.model import OwnerClassifier, OwnerModelError
from mldoctor_bench.owner.settings import Owner, assess_settings, owner_config, read_owner
from mldoctor_bench.owner.target import OwnerTarget, with_channels

__all__ = [
    "Owner",
    "OwnerClassifier",
    "OwnerModelError",
    "OwnerTarget",
    "assess_settings",
    "owner_config",
    "read_owner",
    "with_channels",
]
