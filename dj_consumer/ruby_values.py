"""Python values for the Ruby things a delayed_job handler can hold (SPEC §3).

Plain Ruby data maps to plain Python data (Hash → dict, Symbol → str, BigDecimal → Decimal,
Time → aware datetime …). What has no plain Python twin gets a small type here, chosen so
that nothing the handler said is lost and so that it dumps back to the same Ruby value:

- ``RubyObject``: any ``!ruby/object:X`` (and ``RubyStruct`` for ``!ruby/struct:X``): a dict of
  the instance variables / struct members that remembers the Ruby class name;
- ``RubyRecord``: an ActiveRecord (or Mongoid/DataMapper) record, whichever way Rails wrote
  it: a dict of the column values (``id`` included when the YAML has it);
- ``RubyClass`` / ``RubyModule``: a class or module reference (``!ruby/class 'UserMailer'``),
  a ``str``;
- ``RubyGlobalID``: an ActiveJob ``{"_aj_globalid": uri}`` argument, a ``str`` (the URI);
- ``RubyRange``, ``RubyRegexp``: frozen dataclasses holding exactly what Ruby holds;
- ``RubySet``: a read-only set that also holds unhashable members (Ruby sets can).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RubyClass",
    "RubyGlobalID",
    "RubyModule",
    "RubyObject",
    "RubyRange",
    "RubyRecord",
    "RubyRegexp",
    "RubySet",
    "RubyStruct",
]


class RubyObject(dict[str, Any]):
    """A Ruby object: its instance variables (without ``@``), and its class in ``ruby_class``."""

    __slots__ = ("ruby_class",)

    def __init__(self, ruby_class: str, attributes: Mapping[str, Any] | None = None) -> None:
        super().__init__(attributes or {})
        self.ruby_class = ruby_class

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ruby_class!r}, {dict.__repr__(self)})"

    def __eq__(self, other: object) -> bool:
        # Equal to a plain dict with the same items (handy in tests and handlers), but two
        # Ruby values of different classes are different values.
        if isinstance(other, RubyObject) and (
            type(other) is not type(self) or other.ruby_class != self.ruby_class
        ):
            return False
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __reduce__(self) -> Any:
        return (type(self), (self.ruby_class, dict(self)))


class RubyStruct(RubyObject):
    """A ``Struct`` instance (``!ruby/struct:X``): its members by name."""

    __slots__ = ()


class RubyRecord(RubyObject):
    """An ActiveRecord record: its column values (raw, as the database gave them to Rails)."""

    __slots__ = ()

    @property
    def id(self) -> Any:
        """The primary key value, or None when the handler did not carry one."""
        return self.get("id")


class RubyClass(str):
    """A reference to a Ruby class or module, e.g. the receiver of ``UserMailer.delay.welcome``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RubyClass({str.__repr__(self)})"


class RubyModule(RubyClass):
    """A reference to a Ruby module that is not a class (``!ruby/module 'Maintenance'``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RubyModule({str.__repr__(self)})"


class RubyGlobalID(str):
    """An ActiveJob GlobalID argument; ``str()`` is the ``gid://app/Model/id`` URI."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RubyGlobalID({str.__repr__(self)})"

    @property
    def model_name(self) -> str:
        """``"User"`` for ``gid://app/User/1``."""
        parts = self.split("/", 4)
        return parts[3] if len(parts) > 3 else ""

    @property
    def model_id(self) -> str:
        """``"1"`` for ``gid://app/User/1`` (GlobalID ids are strings)."""
        parts = self.split("/", 4)
        return parts[4].split("?", 1)[0] if len(parts) > 4 else ""


@dataclass(frozen=True, slots=True)
class RubyRange:
    """``begin..end`` (or ``begin...end`` when ``exclude_end``); either end may be None."""

    begin: Any
    end: Any
    exclude_end: bool = False


@dataclass(frozen=True, slots=True)
class RubyRegexp:
    """A Ruby regular expression: its source and its option letters (a subset of ``"mixn"``).

    Ruby and Python regex syntax differ; this keeps Ruby's text so it can go back unchanged.
    """

    source: str
    options: str = ""


class RubySet(AbstractSet[Any]):
    """A Ruby ``Set``: read-only, insertion-ordered; members may be unhashable (dicts, lists)."""

    __slots__ = ("_hashable", "_items")

    def __init__(self, items: Iterable[Any] = ()) -> None:
        unique: list[Any] = []
        hashable: set[Any] = set()
        for item in items:
            if _is_hashable(item):
                if item in hashable:
                    continue
                hashable.add(item)
            elif item in unique:
                continue
            unique.append(item)
        self._items = tuple(unique)
        self._hashable = frozenset(hashable)

    def __contains__(self, item: object) -> bool:
        if _is_hashable(item):
            return item in self._hashable
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"RubySet({list(self._items)!r})"

    def __hash__(self) -> int:
        if len(self._hashable) != len(self._items):
            raise TypeError("unhashable RubySet (it holds unhashable members)")
        return hash(self._hashable)


def _is_hashable(item: object) -> bool:
    try:
        hash(item)
    except TypeError:
        return False
    return True
