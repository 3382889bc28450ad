"""The class of every cut-off: a JSON document cut at any position is never completed by tier 2,
whatever the document holds and however it was written (as JSON, or as a Python literal)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aopkit.faults import DEFAULT_POLICY, CutOff, correct
from aopkit.structured import Target

ANY: Target[Any] = Target("any value", {}, lambda value: value)
# the kernel is shared by the examples of a test: tier 2 changes it only when it fixes something
SHARED_KERNEL = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
# strings that look like what the scanner keys on: quotes, escapes, fences, brackets, comments
TRICKY = st.sampled_from(
    ['"', "'", "\\", "```", "{", "}", "[", "]", "//", "#", "/*", "“", ":", ","]
)
TEXT = st.lists(st.text(max_size=4) | TRICKY, max_size=4).map("".join)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
VALUES = st.recursive(
    SCALARS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
DOCUMENTS = st.dictionaries(TEXT, VALUES, min_size=1, max_size=3) | st.lists(VALUES, min_size=1)
WRITERS = {
    "json": lambda v: json.dumps(v),
    "json, indented, not ASCII": lambda v: json.dumps(v, indent=2, ensure_ascii=False),
    "Python literal": repr,
}


def tier_2(kernel: Any, text: str) -> Any:
    """What the default correctors make of ``text``; None when they refuse."""
    try:
        return correct(kernel, "test", text, ANY, DEFAULT_POLICY.correctors, kind="", error="")
    except CutOff:
        return None


@settings(max_examples=80, deadline=None, suppress_health_check=SHARED_KERNEL)
@given(document=DOCUMENTS, writer=st.sampled_from(sorted(WRITERS)), data=st.data())
def test_a_document_cut_anywhere_is_refused(kernel, document, writer, data):
    text = WRITERS[writer](document)
    cut = data.draw(st.integers(0, len(text) - 1), label="cut at")
    prefix = text[:cut]
    assert tier_2(kernel, prefix) is None, f"{prefix!r} was completed"


@settings(max_examples=25, deadline=None, suppress_health_check=SHARED_KERNEL)
@given(document=DOCUMENTS)
def test_no_prefix_of_a_document_is_completed(kernel, document):
    text = json.dumps(document)
    completed = [text[:i] for i in range(len(text)) if tier_2(kernel, text[:i]) is not None]
    assert completed == []


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "use ```json\n{}',  # a fence inside a string of a value cut off
        '{"a": "see {\\"b\\": 1} here", "c": [',  # JSON inside a string
        '[{"a": 1}, {"b": 2}',  # whole items, the list cut off
        '{"a": [], "b": {}',  # whole values, the object cut off
        "{'a': 'x', 'b': [True, None",
        '{"a": 1} {"a": 1',  # the same value twice, the second cut off
    ],
)
def test_whole_parts_inside_a_value_cut_off_are_not_the_value(kernel, text):
    assert tier_2(kernel, text) is None
