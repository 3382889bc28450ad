"""Agent memory: the messages an agent has seen and said, in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .errors import ConfigurationError, DecodeError
from .message import Msg, as_msg

SCAN = 16
"""Up to this many messages, a memory finds duplicates by looking through them (no set)."""


class Memory:
    """An ordered list of messages without duplicates (by id).

    Adding is O(1) whatever the history's length; a retried or re-delivered message is stored once.
    With ``window=N`` only the latest ``N`` messages are kept (the oldest is forgotten as a new
    one comes), so an agent that lives for many rounds uses bounded memory.
    """

    __slots__ = ("_ids", "_messages", "window")

    def __init__(self, messages: Iterable[Msg] = (), *, window: int | None = None) -> None:
        if window is not None and (type(window) is not int or window < 1):
            raise ConfigurationError(f"Memory(window=...) must be an int >= 1, got {window!r:.80}")
        self.window = window
        self._messages: list[Msg] = []
        self._ids: set[str] | None = None  # made when it holds more than SCAN messages
        self.extend(messages)

    def add(self, msg: Msg | str) -> bool:
        """Store ``msg`` (a ``str`` is a user message); return False if a message with its id
        is already stored."""
        if not isinstance(msg, Msg):
            msg = as_msg(msg, "Memory.add(msg)")
        ids, messages = self._ids, self._messages
        if ids is None:  # a short memory: looking through it is cheaper than a set, and a
            # million agents' memories hold no set each the collector must walk
            msg_id = msg.id
            for kept in messages:
                if kept.id == msg_id:
                    return False
            messages.append(msg)
            if self.window is not None and len(messages) > self.window:
                del messages[0]
            elif len(messages) > SCAN:  # grown long: from now on, a set of its ids
                self._ids = {kept.id for kept in messages}
            return True
        if msg.id in ids:
            return False
        ids.add(msg.id)
        messages.append(msg)
        if self.window is not None and len(messages) > self.window:
            ids.discard(messages.pop(0).id)  # the shift is cheap next to what a window holds
        return True

    def extend(self, messages: Iterable[Msg | str]) -> None:
        """Store each message in turn (a single message or ``str`` is stored whole, never
        letter by letter)."""
        if isinstance(messages, (str, Msg)):
            messages = [messages]
        for msg in messages:
            self.add(msg)

    def remove(self, msg_id: str) -> None:
        """Forget the message with ``msg_id`` (KeyError if absent)."""
        if msg_id not in self:
            raise KeyError(msg_id)
        if self._ids is not None:
            self._ids.remove(msg_id)
        self._messages = [m for m in self._messages if m.id != msg_id]

    def clear(self) -> None:
        self._messages.clear()
        if self._ids is not None:
            self._ids.clear()

    def __contains__(self, msg: object) -> bool:
        msg_id = msg.id if isinstance(msg, Msg) else msg
        if self._ids is None:
            return any(m.id == msg_id for m in self._messages)
        return msg_id in self._ids

    def __iter__(self) -> Iterator[Msg]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> Msg:
        return self._messages[index]

    def messages(self) -> list[Msg]:
        """A copy of the stored messages, oldest first."""
        return list(self._messages)

    def state_dict(self, codec: Any) -> list[Any]:
        return [codec.dump(m) for m in self._messages]

    def load_state_dict(self, state: list[Any], codec: Any) -> None:
        """Replace the contents; decode everything first so bad state leaves memory untouched."""
        messages = []
        for i, data in enumerate(state):
            try:
                messages.append(codec.load(data))
            except DecodeError as exc:
                raise exc.under(f"[{i}]") from None
        self.clear()
        self.extend(messages)
