"""``ConfigSection``: the JSON round trip of a config dataclass that is one section of a training config file
(``"adversarial"``, ``"augment"``): ``to_dict()`` and ``from_dict(d)``, which refuses a non-object or unknown keys
with a one-line :class:`ConfigError` (the dataclass's ``__post_init__`` checks the values)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from vqaudio.errors import ConfigError

__all__ = ["ConfigSection"]

S = TypeVar("S", bound="ConfigSection")


class ConfigSection:
    """Mixin for dataclasses; ``SECTION`` names the config file's section in error messages."""

    SECTION: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any]) -> S:
        if not isinstance(d, dict):
            raise ConfigError(f"the {cls.SECTION} config must be a JSON object, got {d!r}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
        return cls(**d)
