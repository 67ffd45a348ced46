"""``mldoctor-assess`` as a command: the owner's weights are read once per run, by pre-flight and the
run's cell alike."""

from __future__ import annotations

from safetensors.torch import save_file

from mldoctor_bench import assess, entry
from mldoctor_bench.models import build_model
from mldoctor_bench.owner import settings


def test_the_owners_weights_are_read_once_per_run(tmp_path, monkeypatch):
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("simple_cnn", 1, 10, 28).state_dict().items()}, str(weights))
    reads = []
    real = settings.load_weights
    monkeypatch.setattr(settings, "load_weights", lambda path: reads.append(path) or real(path))
    argv = [
        f"model.weights={weights}",
        "model.arch=simple_cnn",
        "profile=tiny",
        "device=cpu",
        f"results_dir={tmp_path / 'results'}",
    ]
    command = assess.AssessCommand()
    entry.preflight(command, argv)  # the cell's config, its plan and the early checks
    cfg, target = command.cell(entry.compose_checked(command.config, argv))  # what the Hydra job does next
    assert reads == [weights.resolve()]
    assert target.owner.weights == weights.resolve() and cfg.arch.name == target.owner.arch_name
