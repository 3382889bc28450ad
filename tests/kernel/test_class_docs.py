"""``help()`` on every public class shows that class's own docstring, not its base class's."""

from __future__ import annotations

import inspect
import pydoc

import pytest

import aopkit
from aopkit import blocks, events


def public_classes():
    found = {getattr(aopkit, name) for name in aopkit.__all__}
    for module in (blocks, events):
        found |= {
            value
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
    return sorted((c for c in found if inspect.isclass(c)), key=lambda c: c.__qualname__)


@pytest.mark.parametrize("cls", public_classes(), ids=lambda c: c.__qualname__)
def test_every_public_class_has_its_own_docstring(cls):
    own = cls.__dict__.get("__doc__")
    assert isinstance(own, str) and own.strip(), f"{cls.__qualname__} has no docstring"
    for base in cls.__mro__[1:]:
        assert own != base.__doc__, f"{cls.__qualname__} repeats {base.__qualname__}'s docstring"
    assert inspect.cleandoc(own).splitlines()[0] in pydoc.render_doc(cls, renderer=pydoc.plaintext)


def test_the_check_covers_the_blocks_and_events():
    names = {c.__name__ for c in public_classes()}
    assert {"TextBlock", "ImageBlock", "HubJoined", "ToolFinished", "StateLoaded"} <= names
