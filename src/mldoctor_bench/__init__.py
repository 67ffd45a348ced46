"""mldoctor-bench: holistic risk assessment of inference attacks against image classifiers."""

__version__ = "0.1.0"
