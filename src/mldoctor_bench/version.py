"""The package's version (a module of its own, so that what reads it imports nothing else)."""

__version__ = "0.1.0"
