"""Config dataclasses registered by type name: the one mechanism behind ``CameraConfig.from_dict`` and
``RobotConfig.from_dict`` (LeRobot's pattern: a config per device kind, chosen by its ``type``).

A base config mixes :class:`RegisteredByType` in and gives itself an empty ``_registry`` and a
``noun`` for its messages; every subclass that sets ``type`` registers in that base's registry.
``_register_builtins`` imports the modules that define the built-in configs (light: no vendor
imports at module level), so ``from_dict`` knows them without the caller importing anything.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar


class RegisteredByType:
    type: ClassVar[str] = ""
    noun: ClassVar[str] = "device"  # in error messages: "... for a realsense camera"
    _registry: ClassVar[dict[str, type]]  # each base defines its own

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.type:
            cls._registry[cls.type] = cls

    @classmethod
    def _register_builtins(cls) -> None:
        """Import the modules whose subclasses register (overridden by each base)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | None = None):
        """The config of ``values['type']`` with the other fields; unknown fields are errors."""
        where = where or f"{cls.noun} config"
        values = dict(values)
        kind = values.pop("type", None)
        cls._register_builtins()
        if kind not in cls._registry:
            raise ValueError(f"{where}: field 'type' = {kind!r}; expected one of {sorted(cls._registry)}")
        config_cls = cls._registry[kind]
        known = {f.name for f in fields(config_cls)}  # the settable fields, not the ClassVars
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown} for a {kind} {cls.noun}; known: {sorted(known)}")
        return config_cls(**values)
