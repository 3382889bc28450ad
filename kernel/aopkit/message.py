"""The message: the only thing agents exchange."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeVar, overload

import attrs

from .blocks import Block, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .errors import EncodeError
from .jsontext import problem

Role = Literal["user", "assistant", "system"]
ROLES: frozenset[str] = frozenset(("user", "assistant", "system"))

B = TypeVar("B", bound=Block)


BLOCK = 256
"""Ids are made this many at a time: formatting a number costs more than all the rest of
making a message, so it is done once a block."""
_TAILS = tuple(f"{i:02x}" for i in range(BLOCK))


def _new_prefix() -> str:
    return os.urandom(6).hex()


_prefix = _new_prefix()
_blocks = itertools.count()
_ids: Iterator[str] = iter(())


def _reseed_after_fork() -> None:
    global _prefix, _blocks, _ids
    _prefix, _blocks, _ids = _new_prefix(), itertools.count(), iter(())


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> str:
    """A process-unique random prefix, a block's number and a place in the block: unique
    across processes and threads, cheap per call (the next of a block made at once)."""
    return next(_ids, None) or _next_block()


def _next_block() -> str:
    """Make the next block of ids and give its first. Threads that find the block used up
    at once each make one of their own (the counter numbers each anew), and the ids a block
    that is replaced still holds are never given: no id is given twice."""
    global _ids
    head = f"{_prefix}{next(_blocks):x}"
    ids = iter([head + tail for tail in _TAILS])
    first = next(ids)  # before it is shared: other threads could use it up meanwhile
    _ids = ids
    return first


def _check_role(_: object, __: object, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of 'user', 'assistant', 'system', not {role!r}")


class _Kept:
    """What a message works out once and keeps (what formatters made of it, its character
    count): slots outside the attrs fields, so they are in no comparison, copy, pickle or saved
    form, and a derived message (:func:`attrs.evolve`) starts without them. ``_formatted``
    (``(key, what a formatter made)``, see :func:`aopkit.formatting.keep`) is None from the
    start: formatters read it for every message of every call, and an unset slot would raise
    (and catch) an ``AttributeError`` at each message's first format."""

    __slots__ = ("_counted", "_formatted")

    _counted: int
    _formatted: tuple[object, Any] | None


_UNSET: Any = attrs.NOTHING  # an argument not given, as in the __init__ attrs would write


@attrs.frozen(eq=True, hash=False, init=False, weakref_slot=False)
class Msg(_Kept):
    """One message: who said it (``name``), in which ``role``, and what (``content``).

    ``content`` is plain text or a list of blocks. Messages are immutable: deliver the same object
    to every observer; use :func:`attrs.evolve` to derive a changed one.
    """

    name: str
    content: str | list[Block]
    role: Role = attrs.field(validator=_check_role)
    metadata: dict[str, Any] = attrs.field(factory=dict, kw_only=True)
    id: str = attrs.field(factory=new_id, kw_only=True)
    timestamp: float = attrs.field(factory=time.time, kw_only=True)

    def __new__(
        cls,
        name: str,
        content: str | list[Block],
        role: Role,
        *,
        metadata: dict[str, Any] = _UNSET,
        id: str = _UNSET,
        timestamp: float = _UNSET,
    ) -> Msg:
        """What the ``__init__`` attrs would write does (same arguments, defaults and role
        check), at less than half its cost: the message is made as a :class:`_Unfrozen`, whose
        slots take plain assignments, then becomes a Msg (the same slots in the same places).
        A million agents make a message each per round."""
        if role not in ROLES:
            _check_role(None, None, role)
        msg = _Unfrozen()
        msg.name = name
        msg.content = content
        msg.role = role
        msg.metadata = {} if metadata is _UNSET else metadata
        msg.id = (next(_ids, None) or _next_block()) if id is _UNSET else id  # new_id(), inlined
        msg.timestamp = time.time() if timestamp is _UNSET else timestamp
        msg._formatted = None
        msg.__class__ = cls  # type: ignore[assignment]
        return msg  # type: ignore[return-value]

    if TYPE_CHECKING:  # what type checkers (and attrs.evolve's checks) take Msg(...) to be

        def __init__(
            self,
            name: str,
            content: str | list[Block],
            role: Role,
            *,
            metadata: dict[str, Any] = ...,
            id: str = ...,
            timestamp: float = ...,
        ) -> None: ...

    def __getnewargs__(self) -> tuple[str, str | list[Block], Role]:
        """What copy and pickle pass to :meth:`__new__` before they set the state."""
        return self.name, self.content, self.role

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        """Pickles of every protocol make the message through :meth:`__new__` (protocols 0
        and 1 would make a bare object, without what :class:`_Kept` starts with)."""
        return super().__reduce_ex__(max(int(protocol), 2))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass may add slots or a ``__dict__``, so no :class:`_Unfrozen` can become one:
        its instances are made by :func:`_made_bare` (then its own ``__init__``, if any, runs)."""
        super().__init_subclass__(**kwargs)
        cls.__new__ = staticmethod(_made_bare)  # type: ignore[method-assign]

    @property
    def text(self) -> str:
        """The text of the message: the string content, or its text blocks joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def _chars(self) -> int:
        """The characters of its text, thinking, tool calls and tool results (media count
        nothing): what token estimates count. Counted once, as messages are immutable, so an
        estimate of a long history does not count it all again on every call."""
        counted: int | None = getattr(self, "_counted", None)
        if counted is None:
            content = self.content
            counted = len(content) if isinstance(content, str) else _chars(content)
            _COUNTED.__set__(self, counted)
        return counted

    @overload
    def blocks(self, kind: None = None) -> list[Block]: ...
    @overload
    def blocks(self, kind: type[B]) -> list[B]: ...
    @overload
    def blocks(self, kind: str) -> list[Block]: ...
    def blocks(self, kind: type[Block] | str | None = None) -> list[Any]:
        """The content as blocks, optionally only those of one class or ``type`` tag."""
        content = [TextBlock(self.content)] if isinstance(self.content, str) else self.content
        if kind is None:
            return list(content)
        if isinstance(kind, str):
            return [b for b in content if b.type == kind]
        return [b for b in content if isinstance(b, kind)]


def with_metadata(msg: Msg, key: str, value: Any) -> Msg:
    """``msg`` with ``metadata[key] = value``, the same message otherwise (id, time): what
    :func:`attrs.evolve` gives, made directly (four times as fast) for a plain :class:`Msg`,
    as every reply with model calls gets its usage so."""
    metadata = {**msg.metadata, key: value}
    if type(msg) is not Msg:
        return attrs.evolve(msg, metadata=metadata)
    return restored(msg.name, msg.content, msg.role, metadata, msg.id, msg.timestamp)


def restored(
    name: str,
    content: str | list[Block],
    role: Role,
    metadata: dict[str, Any],
    id: str,
    timestamp: float,
) -> Msg:
    """The plain :class:`Msg` of these fields (a message taken apart to cross processes, or
    one being derived), as ``Msg(name, content, role, metadata=..., id=..., timestamp=...)``
    makes it, at half the cost: no keyword arguments, no defaults."""
    if role not in ROLES:
        _check_role(None, None, role)
    msg = _Unfrozen()  # as Msg.__new__ makes one
    msg.name, msg.content, msg.role = name, content, role
    msg.metadata, msg.id, msg.timestamp = metadata, id, timestamp
    msg._formatted = None
    msg.__class__ = Msg  # type: ignore[assignment]
    return msg  # type: ignore[return-value]


_COUNTED = _Kept.__dict__["_counted"]  # the slot itself: set past the frozen class's refusal


class _Unfrozen(_Kept):
    """A message under construction: Msg's slots in Msg's order, without its refusal to be
    assigned to (CPython lets an object change to a class of the same layout)."""

    __slots__ = Msg.__slots__

    name: str
    content: str | list[Block]
    role: Role
    metadata: dict[str, Any]
    id: str
    timestamp: float


def _made_bare(cls: type[Msg], *args: Any, **kwargs: Any) -> Msg:
    """A subclass's ``__new__``: Msg's own arguments make a Msg (its checks and defaults),
    whose fields the subclass's instance takes, set past the frozen class's refusal. What else
    it is given is its own ``__init__``'s (an attrs subclass's sets every field again)."""
    given = {name: kwargs[name] for name in Msg.__slots__ if name in kwargs}
    made = Msg(*args[:3], **given)
    msg = object.__new__(cls)
    for name in (*Msg.__slots__, "_formatted"):
        object.__setattr__(msg, name, getattr(made, name))
    return msg


def _chars(blocks: Iterable[Any]) -> int:
    chars = 0
    for block in blocks:
        if isinstance(block, TextBlock):
            chars += len(block.text)
        elif isinstance(block, ThinkingBlock):
            chars += len(block.thinking)
        elif isinstance(block, ToolUseBlock):
            chars += len(block.name) + len(block.raw_input or json.dumps(block.input, default=str))
        elif isinstance(block, ToolResultBlock):
            output = block.output
            chars += len(output) if isinstance(output, str) else _chars(output)
    return chars


def as_msg(value: object, argument: str = "msg", *names: object) -> Msg:
    """``value`` as a message: a ``str`` becomes a user message from ``"user"``; anything but a
    :class:`Msg` or a ``str`` is a :class:`~aopkit.errors.MessageTypeError` naming ``argument``
    (a ``str.format`` template filled with ``names`` only then: hot paths pass names, not
    texts made for an error that almost never happens).
    Every public entry that takes a message converts with this (or :func:`as_input`)."""
    if isinstance(value, Msg):
        return value
    if isinstance(value, str):
        return _user_msg(value, argument, names)
    from .errors import MessageTypeError

    raise MessageTypeError(_where(argument, names), value)


def _user_msg(text: str, argument: str, names: tuple[object, ...]) -> Msg:
    """``text`` as a user message, refused if it could never be stored or sent (a lone
    surrogate, which UTF-8 cannot encode, would fail later at a save, a trace or a request)."""
    found = problem(text)
    if found is not None:
        raise EncodeError(_where(argument, names), found[1])
    return Msg("user", text, "user")


def as_input(value: object, argument: str = "msg", *names: object) -> Msg | list[Msg] | None:
    """What an agent may be given: None, a message, a ``str``, or a list (or tuple) of them;
    each ``str`` becomes a user message. A list of messages only is returned as it was.
    ``argument`` and ``names`` as for :func:`as_msg`."""
    if value is None or isinstance(value, Msg):
        return value
    if isinstance(value, str):
        return _user_msg(value, argument, names)
    if isinstance(value, (list, tuple)):
        if set(map(type, value)) <= {Msg} or all(isinstance(item, Msg) for item in value):
            return value if isinstance(value, list) else list(value)
        where = _where(argument, names)
        return [as_msg(item, f"{where}[{i}]") for i, item in enumerate(value)]
    from .errors import MessageTypeError

    raise MessageTypeError(
        _where(argument, names), value, "an aopkit.Msg, a str, a list of them, or None"
    )


def _where(argument: str, names: tuple[object, ...]) -> str:
    return argument.format(*names) if names else argument
