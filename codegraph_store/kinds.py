"""Node and edge kinds with stable integer codes.

The codes are written into every ``.cgdb`` file and must never change meaning:
add new kinds with new codes (and a migration that inserts their names into the
``node_kinds``/``edge_kinds`` tables), never renumber.
"""

from __future__ import annotations

import enum

from .errors import InvalidArgumentError, InvalidTypeError


class _Kind(enum.IntEnum):
    @classmethod
    def parse(cls, value: "int | str | _Kind"):
        """Accept a member, its integer code or its name (case-insensitive)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise InvalidTypeError(f"{cls.__name__} must be a name or code, got bool")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise InvalidArgumentError(f"unknown {cls.__name__} code {value}") from None
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in cls)
                raise InvalidArgumentError(
                    f"unknown {cls.__name__} {value!r}; expected one of {names}"
                ) from None
        raise InvalidTypeError(f"{cls.__name__} must be a name or code, got {type(value).__name__}")

    @property
    def label(self) -> str:
        """Lower-case name, as shown in the SQL views and the CLI."""
        return self.name.lower()


class NodeKind(_Kind):
    """What a node stands for."""

    MODULE = 1
    CLASS = 2
    FUNCTION = 3
    METHOD = 4
    VARIABLE = 5
    IMPORT = 6
    ATTRIBUTE = 7
    PARAMETER = 8


class EdgeKind(_Kind):
    """How two nodes are related; edges point from ``src`` to ``dst``."""

    CONTAINS = 1  # parent scope contains child
    CALLS = 2  # caller calls callee
    IMPORTS = 3  # module imports module
    INHERITS = 4  # subclass inherits base
    REFERENCES = 5  # symbol refers to symbol (non-call use)
