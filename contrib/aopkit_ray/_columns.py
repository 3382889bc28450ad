"""A pool's replies as one payload of columns (names, contents, roles, metadata, ids,
timestamps) instead of one serialised message per agent: a round of many agents crosses the
wire as six lists pickled in one go, and the driver rebuilds the very same messages.

The actor pickles the columns itself, with Ray's cloudpickle (metadata may hold whatever Ray
could carry, such as instances of classes defined in a function), and Ray carries bytes. The
driver unpickles them in :func:`unpack`, with the garbage collector paused while a round's
objects are made, not in Ray's thread as they arrive (where each pool's replies set off
collections that walked every reply the driver keeps: about a third of a round on Ray).

The driver rebuilds every reply of every round, alone, so what it need not be sent is not: a
reply named as its agent (the usual case) takes the driver's own copy of the name, and a round
of plain-text replies is rebuilt in one C loop."""

from __future__ import annotations

import pickle
from typing import Any

from ray import cloudpickle

from aopkit import AopkitError, Msg
from aopkit.codec import Codec
from aopkit.message import restored
from aopkit.pool import collector_paused

Columns = tuple[
    list[str] | None, list[Any], list[str], list[dict[str, Any]], list[str], list[float], bool
]
"""(names, or None when they are the agents' own; contents; roles; metadata; ids; timestamps;
whether every content is plain text)."""


def replied(agents: list[str], failures: dict[str, str]) -> list[str]:
    """The names of ``agents`` that replied (none of ``failures``), in order: what both sides
    of a bulk call know without sending it."""
    return [name for name in agents if name not in failures] if failures else agents


def pack(replies: list[Msg], codec: Codec, agents: list[str]) -> bytes:
    """The columns of ``replies``, pickled. ``agents`` names the agents that replied, in order:
    names equal to theirs do not cross. Content that is not plain text goes as the codec's form
    of its blocks (media stay references, unknown block types keep their fields)."""
    names = [m.name for m in replies]
    contents = [m.content for m in replies]
    plain = set(map(type, contents)) <= {str}
    if not plain:
        contents = [c if type(c) is str else codec.dump(c) for c in contents]
    columns: Columns = (
        None if names == agents else names,
        contents,
        [m.role for m in replies],
        [m.metadata for m in replies],
        [m.id for m in replies],
        [m.timestamp for m in replies],
        plain,
    )
    payload: bytes = cloudpickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL)
    return payload


def unpack(payload: bytes, codec: Codec, agents: list[str]) -> list[Msg]:
    """The messages :func:`pack` took apart, equal to the originals (ids and timestamps
    included); ``agents`` names the agents that replied, in order, as :func:`pack` was told."""
    with collector_paused():
        columns: Columns = pickle.loads(payload)  # our own actor's reply (Ray unpickles it anyway)
        names, contents, roles, metadata, ids, timestamps, plain = columns
        if names is None:
            names = agents
        if len(names) != len(ids):
            raise AopkitError(f"{len(ids)} replies came back for the {len(names)} agents named")
        if plain:  # text messages are restored directly, at half the cost of a keyword call
            return list(map(restored, names, contents, roles, metadata, ids, timestamps))
        return [
            restored(name, content, role, meta, id, timestamp)
            if type(content) is str
            else codec.load(
                {
                    "name": name,
                    "content": content,
                    "role": role,
                    "metadata": meta,
                    "id": id,
                    "timestamp": timestamp,
                }
            )
            for name, content, role, meta, id, timestamp in zip(
                names, contents, roles, metadata, ids, timestamps, strict=True
            )
        ]
