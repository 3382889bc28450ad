"""Agent memory: the messages an agent has seen and said, in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .errors import DecodeError
from .message import Msg, as_msg


class Memory:
    """An ordered list of messages without duplicates (by id).

    Adding is O(1) whatever the history's length; a retried or re-delivered message is stored once.
    """

    __slots__ = ("_ids", "_messages")

    def __init__(self, messages: Iterable[Msg] = ()) -> None:
        self._messages: list[Msg] = []
        self._ids: set[str] = set()
        self.extend(messages)

    def add(self, msg: Msg | str) -> bool:
        """Store ``msg`` (a ``str`` is a user message); return False if a message with its id
        is already stored."""
        if not isinstance(msg, Msg):
            msg = as_msg(msg, "Memory.add(msg)")
        if msg.id in self._ids:
            return False
        self._ids.add(msg.id)
        self._messages.append(msg)
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
        self._ids.remove(msg_id)
        self._messages = [m for m in self._messages if m.id != msg_id]

    def clear(self) -> None:
        self._messages.clear()
        self._ids.clear()

    def __contains__(self, msg: object) -> bool:
        return (msg.id if isinstance(msg, Msg) else msg) in self._ids

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
