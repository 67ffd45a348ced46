"""mldoctor-bench: holistic risk assessment of inference attacks against image classifiers."""

from mldoctor_bench.version import __version__

__all__ = ["__version__", "load_target", "predict"]


def __getattr__(name: str):
    """``mldoctor_bench.load_target`` and ``mldoctor_bench.predict``, imported on first use (the
    package itself stays light: the report never loads torch)."""
    if name in ("load_target", "predict"):
        from mldoctor_bench.cell import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'mldoctor_bench' has no attribute {name!r}")
