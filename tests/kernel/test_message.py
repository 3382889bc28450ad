import concurrent.futures
import copy
import inspect
import multiprocessing
import pickle
import sys
import threading
import time

import attrs
import pytest

from aopkit import ImageBlock, Msg, TextBlock, ToolUseBlock, URLSource, message
from aopkit.message import new_id


def test_text_of_string_and_blocks():
    assert Msg("a", "hello", "user").text == "hello"
    msg = Msg(
        "a", [TextBlock("one"), ImageBlock(URLSource("http://x/a.png")), TextBlock("two")], "user"
    )
    assert msg.text == "one\ntwo"


def test_blocks_by_class_and_by_tag():
    use = ToolUseBlock("c1", "search", {"q": "x"})
    msg = Msg("a", [TextBlock("t"), use], "assistant")
    assert msg.blocks(ToolUseBlock) == [use]
    assert msg.blocks("tool_use") == [use]
    assert msg.blocks() == msg.content
    assert Msg("a", "plain", "user").blocks(TextBlock) == [TextBlock("plain")]


def test_role_is_checked():
    with pytest.raises(ValueError, match="role must be one of"):
        Msg("a", "x", "robot")


def test_messages_are_immutable_values():
    msg = Msg("a", "x", "user")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        msg.content = "y"
    changed = attrs.evolve(msg, content="y")
    assert changed.id == msg.id and changed.content == "y" and msg.content == "x"


def test_msg_is_made_as_attrs_would_make_it():
    """Msg makes itself (a hot path, in ``__new__``): the parameters, defaults, values and
    check of the ``__init__`` attrs would write."""
    twin = attrs.make_class(
        "Twin",
        {
            f.name: attrs.field(default=f.default, validator=f.validator, kw_only=f.kw_only)
            for f in attrs.fields(Msg)
        },
        frozen=True,
    )
    params = [
        [(p.name, p.kind, p.default) for p in inspect.signature(made).parameters.values()][1:]
        for made in (Msg.__new__, twin.__init__)
    ]
    assert params[0] == params[1]
    given = {"metadata": {"k": [1]}, "id": "x", "timestamp": 1.0}
    assert attrs.asdict(Msg("a", "t", "user", **given)) == attrs.asdict(
        twin("a", "t", "user", **given)
    )
    one, two = Msg("a", "t", "system"), Msg("a", "t", "system")
    assert one.metadata == {} and one.metadata is not two.metadata and one.id != two.id
    assert abs(one.timestamp - time.time()) < 60
    for role in ("robot", "", None):
        with pytest.raises(ValueError, match="role must be one of"):
            Msg("a", "x", role)  # type: ignore[arg-type]


class Note(Msg):
    """A plain subclass: it has a ``__dict__`` besides Msg's slots."""


@attrs.frozen
class Tagged(Msg):
    tag: str = "none"


@pytest.mark.parametrize(
    "copied", [copy.copy, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))]
)
def test_messages_and_subclasses_copy_and_pickle_whole(copied):
    for msg in (
        Msg("a", [TextBlock("t")], "user", metadata={"k": 1}),
        Note("a", "t", "user", id="n1"),
        Tagged("a", "t", "assistant", tag="x"),
    ):
        again = copied(msg)
        assert type(again) is type(msg) and again == msg and again.id == msg.id
        assert attrs.evolve(msg, name="b") == attrs.evolve(again, name="b")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            again.name = "b"
    assert Tagged("a", "t", "user").tag == "none" and Tagged("a", "t", "user", tag="y").tag == "y"
    with pytest.raises(ValueError, match="role must be one of"):
        Note("a", "x", "robot")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Msg("a", "x")  # type: ignore[call-arg]


def test_ids_made_by_many_threads_at_once_are_unique():
    """Ids come a block at a time: threads that use a block up together must not share one,
    nor be given the same id twice."""
    barrier = threading.Barrier(8)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch inside new_id, not only between calls

    def make() -> list[str]:
        barrier.wait()
        return [new_id() for _ in range(20 * message.BLOCK + 7)]

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            made = [i for ids in pool.map(lambda _: make(), range(8)) for i in ids]
    finally:
        sys.setswitchinterval(switching)
    assert len(set(made)) == len(made) == 8 * (20 * message.BLOCK + 7)


def test_ids_are_unique_and_differ_in_a_forked_child():
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(new_id()))
    child.start()
    child_id = queue.get(timeout=10)
    child.join()
    parent_id = new_id()
    assert child_id[:12] != parent_id[:12], "a forked child must not reuse the parent's id prefix"


def test_a_restored_message_is_the_message_it_was_and_as_frozen():
    from aopkit.message import restored, with_metadata

    msg = Msg("a", "hi", "assistant", metadata={"k": 1})
    again = restored(msg.name, msg.content, msg.role, msg.metadata, msg.id, msg.timestamp)
    assert type(again) is Msg and again == msg and again is not msg
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        again.role = "user"  # type: ignore[misc]
    with pytest.raises(ValueError, match="role must be one of"):
        restored("a", "hi", "robot", {}, "id", 0.0)  # type: ignore[arg-type]
    noted = with_metadata(msg, "usage", {"calls": 1})
    assert (noted.id, noted.timestamp, noted.metadata) == (
        msg.id,
        msg.timestamp,
        {"k": 1, "usage": {"calls": 1}},
    )
    assert msg.metadata == {"k": 1}
