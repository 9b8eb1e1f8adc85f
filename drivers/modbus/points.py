"""What the acquisition path needs of a profile, without pydantic: tables, file references, and the
methods the running agent calls on points and profiles (shared by the pydantic models of
:mod:`drivers.modbus.profile` and the plain runtime types of :mod:`agent.runconfig`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from drivers.modbus.codec import register_count

if TYPE_CHECKING:
    from collections.abc import Sequence

    from drivers.modbus.codec import Order
    from drivers.modbus.profile import Point

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
POINT_NAME = r"^[a-z][a-z0-9_]{0,62}$"
Table = Literal["coil", "discrete_input", "input_register", "holding_register"]
BIT_TABLES = ("coil", "discrete_input")
READ_FC: dict[str, int] = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}


class PointMethods:
    """What is worked out from a point's fields."""

    __slots__ = ()
    if TYPE_CHECKING:
        table: str
        type: str
        count: int | None
        address: int

    def registers(self) -> int:
        """Registers (or bits, for coils and discrete inputs) this point occupies."""
        return 1 if self.table in BIT_TABLES else register_count(self.type, self.count)

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + self.registers()


class ProfileMethods:
    """Lookups on a profile's points."""

    __slots__ = ()
    if TYPE_CHECKING:
        points: Sequence[Any]
        byte_order: Order
        word_order: Order

    def point(self, name: str) -> Point:
        """The point called ``name`` (KeyError if none)."""
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    def byte_order_of(self, p: Point) -> Order:
        """The point's byte order, or the profile's."""
        return p.byte_order or self.byte_order

    def word_order_of(self, p: Point) -> Order:
        """The point's word order, or the profile's."""
        return p.word_order or self.word_order


def profile_is_path(ref: str | Path) -> bool:
    """Whether a profile reference is a file path (has a slash or a YAML suffix) rather than a shipped name."""
    text = str(ref)
    return "/" in text or text.endswith((".yaml", ".yml"))


def profile_path(ref: str | Path) -> Path:
    """A profile name (``eastron-sdm120``) or a path to a YAML file."""
    return Path(str(ref)) if profile_is_path(ref) else PROFILE_DIR / f"{ref}.yaml"
