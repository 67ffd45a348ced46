"""One registry per concept (datasets, architectures, attacks, threat models, defenses).

Entries are keyed by the same names as the Hydra config groups, so ``dataset=mnist5k`` on the
command line and ``DATASETS.get("mnist5k")`` in code name the same thing.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Raised when a name is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object mapping that fails loudly, listing the choices, on an unknown name; ``check``
    refuses an entry when it is registered (raises ``ValueError`` naming the problem and the fix)."""

    def __init__(self, kind: str, check: Optional[Callable[[str, T], None]] = None) -> None:
        self.kind = kind
        self.check = check
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a programming error.

        A registered class gets ``name`` as a class attribute, so the registry name is written once."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            if self.check is not None:
                self.check(name, obj)
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise :class:`UnknownEntryError` listing choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntryError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_submodules(package_name: str) -> None:
    """Import every module of a package, so that each registers its entries on import."""
    import importlib
    import pkgutil

    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package_name}.{info.name}")
