"""A local submitit launcher that runs a multirun's jobs at most ``max_parallel`` at a time.

hydra-submitit-launcher's ``submitit_local`` starts every job of a sweep at once, which on a
laptop means dozens of concurrent trainings. ``hydra/launcher=local`` sends the same jobs through
submitit in batches of ``max_parallel``: same job folders and logs as on SLURM, bounded load.
Hydra only loads launchers from the ``hydra_plugins`` namespace, hence this package's place. (No
``from __future__ import annotations``: Hydra's plugin scan imports modules outside
``sys.modules``, where dataclasses cannot resolve string annotations.)
"""

from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher


class BoundedLocalLauncher(LocalLauncher):
    """:class:`LocalLauncher` that launches job batches of at most ``max_parallel``."""

    def __init__(self, max_parallel: int = 2, **params: Any) -> None:
        if int(max_parallel) < 1:
            raise ValueError(f"hydra.launcher.max_parallel must be at least 1, got {max_parallel}")
        self.max_parallel = int(max_parallel)
        super().__init__(**params)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        results: list[JobReturn] = []
        for start in range(0, len(job_overrides), self.max_parallel):
            batch = job_overrides[start : start + self.max_parallel]
            results.extend(super().launch(batch, initial_job_idx + start))
        return results


@dataclass
class BoundedLocalQueueConf(LocalQueueConf):
    _target_: str = "hydra_plugins.mldoctor_bench_launcher.BoundedLocalLauncher"
    max_parallel: int = 2


ConfigStore.instance().store(
    group="hydra/launcher", name="local", node=BoundedLocalQueueConf, provider="mldoctor_bench"
)
