"""A pool's replies as one payload of columns (names, contents, roles, metadata, ids,
timestamps) instead of one serialised message per agent: a round of many agents crosses the
wire as six lists pickled in one go, and the driver rebuilds the very same messages.

The actor pickles the columns itself, with Ray's cloudpickle (metadata may hold whatever Ray
could carry, such as instances of classes defined in a function), and Ray carries bytes. The
driver unpickles them in :func:`unpack`, with the garbage collector paused while a round's
objects are made, not in Ray's thread as they arrive (where each pool's replies set off
collections that walked every reply the driver keeps: about a third of a round on Ray)."""

from __future__ import annotations

import pickle
from typing import Any

from ray import cloudpickle

from aopkit import Msg
from aopkit.codec import Codec
from aopkit.message import restored
from aopkit.pool import collector_paused

Columns = tuple[list[str], list[Any], list[str], list[dict[str, Any]], list[str], list[float]]


def pack(replies: list[Msg], codec: Codec) -> bytes:
    """The columns of ``replies``, pickled; content that is not plain text goes as the codec's
    form of its blocks (media stay references, unknown block types keep their fields)."""
    columns: Columns = (
        [m.name for m in replies],
        [m.content if type(m.content) is str else codec.dump(m.content) for m in replies],
        [m.role for m in replies],
        [m.metadata for m in replies],
        [m.id for m in replies],
        [m.timestamp for m in replies],
    )
    payload: bytes = cloudpickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL)
    return payload


def unpack(payload: bytes, codec: Codec) -> list[Msg]:
    """The messages :func:`pack` took apart, equal to the originals (ids and timestamps
    included); a text message is restored directly, at half the cost of a keyword call."""
    with collector_paused():
        columns: Columns = pickle.loads(payload)  # our own actor's reply (Ray unpickles it anyway)
        return [
            restored(name, content, role, metadata, id, timestamp)
            if type(content) is str
            else codec.load(
                {
                    "name": name,
                    "content": content,
                    "role": role,
                    "metadata": metadata,
                    "id": id,
                    "timestamp": timestamp,
                }
            )
            for name, content, role, metadata, id, timestamp in zip(*columns, strict=True)
        ]
