"""JSON (de)serialisation through one cattrs converter, tagged by ``"type"``.

Loading is strict: a value of the wrong type is an error, never coerced, and the error names the
path of the bad field. JSON text goes through :mod:`aopkit.jsontext` (no NaN, no lone surrogates,
bounded nesting), so whatever loads also dumps. Forward compatible: a block or source type that
no loaded plugin knows loads as an :class:`~aopkit.blocks.UnknownBlock` or
:class:`~aopkit.blocks.UnknownSource`, and a field a known type does not know is kept in its
``unknown_fields``; all of them dump back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_unstructure_fn, override

from . import jsontext, schema
from .blocks import Base64Source, Block, Source, UnknownBlock, UnknownSource, URLSource
from .errors import DecodeError, join_path
from .events import EVENT_TYPES, Event
from .message import ROLES, Msg, Role
from .models import Usage

T = TypeVar("T")

_TOO_DEEP = "nested too deeply to load"

_SOURCES: dict[str, type[URLSource] | type[Base64Source]] = {
    URLSource.type: URLSource,
    Base64Source.type: Base64Source,
}


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def check(value: Any, _: Any) -> Any:
        if type(value) is kind:  # the common case, and the only one for str and bool
            return value
        if type(value) is bool or not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r:.40}")
        return value

    return check


def _explain(exc: BaseException) -> tuple[str, str]:
    """(relative path, problem) of the first error inside a cattrs exception tree."""
    if isinstance(exc, DecodeError):
        return exc.path, exc.problem
    if isinstance(exc, RecursionError):
        return "", _TOO_DEEP
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step = f"[{note.index!r}]" if isinstance(note, IterableValidationNote) else note.name
            if isinstance(inner, KeyError):
                return step, "required field is missing"
            path, problem = _explain(inner)
            return join_path(step, path), problem
        if without:
            return _explain(without[0])
    if isinstance(exc, ForbiddenExtraKeysError):
        return "", f"unexpected field(s): {', '.join(sorted(exc.extra_fields))}"
    return "", str(exc) or type(exc).__name__


class Codec:
    """Turns messages (and any attrs value built from them, such as events) into JSON and back;
    dataclasses load as attrs classes do, and pydantic models through pydantic.

    ``block_types`` maps a ``type`` tag to its class; it is read on every load, so block types
    registered later are picked up without rebuilding the converter.
    """

    def __init__(self, block_types: Mapping[str, type[Block]]) -> None:
        self.block_types = block_types
        conv = cattrs.Converter(forbid_extra_keys=True)
        for kind, name in ((str, "a string"), (int, "an integer"), (bool, "a boolean")):
            conv.register_structure_hook(kind, _strict(kind, name))
        conv.register_structure_hook(float, _structure_float)
        conv.register_structure_hook_func(_is_list_or_tuple, self._structure_sequence)
        conv.register_structure_hook_func(lambda t: t == Role, _structure_role)
        conv.register_structure_hook_func(_is_any_dict, self._structure_any_dict)
        conv.register_structure_hook_func(lambda t: t is Block, self._structure_block)
        conv.register_structure_hook_func(_is_content, self._structure_content)
        conv.register_structure_hook_func(lambda t: t == Source, self._structure_source)
        conv.register_unstructure_hook_func(_is_block_class, self._unstructure_block)
        conv.register_unstructure_hook_func(_is_content, self._unstructure_content)
        conv.register_unstructure_hook_func(_is_source_class, self._unstructure_source)
        schema.teach(conv)
        conv.register_unstructure_hook(Usage, _usage_unstructurer(conv))
        self._unstructurers: dict[type, Callable[[Any], dict[str, Any]]] = {}
        # each known block and source class: its field names, its structure hook
        self._known: dict[type, tuple[frozenset[str], Callable[[Any, Any], Any]]] = {}
        self.converter = conv

    # -- public API -------------------------------------------------------------------------
    def dump(self, value: Any) -> Any:
        """A JSON-ready value (dicts, lists, strings, numbers) for a message, block or event."""
        return self.converter.unstructure(value)

    def load(self, data: Any, cls: type[T] = Msg) -> T:  # type: ignore[assignment]
        """Build ``cls`` (a :class:`Msg` by default) from JSON-ready data, or raise DecodeError."""
        if cls is Msg and not isinstance(data, dict):
            raise DecodeError("", f"a message must be a JSON object, got {type(data).__name__}")
        try:
            return self.converter.structure(data, cls)
        except DecodeError:
            raise
        except RecursionError:
            raise DecodeError("", _TOO_DEEP) from None
        except Exception as exc:  # cattrs wraps every failure; name the first bad field
            path, problem = _explain(exc)
            raise DecodeError(path, problem) from None

    def dump_event(self, event: Event) -> dict[str, Any]:
        """An event as a JSON object tagged by its ``type``."""
        return {"type": event.type, **self.converter.unstructure(event)}

    def load_event(self, data: Any) -> Event:
        """The event a :meth:`dump_event` object describes; raise :class:`DecodeError`."""
        tag = data.get("type") if isinstance(data, dict) else None
        cls = EVENT_TYPES.get(tag) if isinstance(tag, str) else None
        if cls is None:
            raise DecodeError("type", f"not a known event type: {tag!r}")
        return self.load({k: v for k, v in data.items() if k != "type"}, cls)

    def dumps_event(self, event: Event) -> str:
        """JSON text of :meth:`dump_event`; :class:`~aopkit.EncodeError` if it would not load."""
        return jsontext.dumps(self.dump_event(event))

    def dumps(self, value: Any) -> str:
        """JSON text of :meth:`dump`; :class:`~aopkit.EncodeError` if it would not load."""
        return jsontext.dumps(self.dump(value))

    def loads(self, text: str | bytes, cls: type[T] = Msg) -> T:  # type: ignore[assignment]
        """Build ``cls`` from JSON text (see :mod:`aopkit.jsontext`), or raise DecodeError."""
        return self.load(jsontext.loads(text), cls)

    # -- hooks ------------------------------------------------------------------------------
    def _structure_block(self, data: Any, _: Any) -> Block:
        if not isinstance(data, dict):
            raise DecodeError("", f"a block must be a JSON object, got {type(data).__name__}")
        tag = data.get("type")
        if not isinstance(tag, str):
            raise DecodeError("type", "a block needs a string 'type' tag")
        fields = data.copy()
        del fields["type"]
        cls = self.block_types.get(tag)
        if cls is None:
            return UnknownBlock(tag, fields)
        try:
            block: Block = self._structure_known(fields, cls)
            return block
        except DecodeError:
            raise
        except Exception as exc:
            path, problem = _explain(exc)
            raise DecodeError(path, problem) from None

    def _structure_content(self, data: Any, _: Any) -> str | list[Block]:
        if isinstance(data, str):
            return data
        if not isinstance(data, list):
            raise DecodeError(
                "", f"expected a string or a list of blocks, got {type(data).__name__}"
            )
        blocks = []
        for i, item in enumerate(data):
            try:
                blocks.append(self._structure_block(item, Block))
            except DecodeError as exc:
                raise exc.under(f"[{i}]") from None
        return blocks

    def _structure_known(self, fields: dict[str, Any], cls: type[Any]) -> Any:
        """``cls`` from ``fields``; fields ``cls`` does not know go to its ``unknown_fields``."""
        found = self._known.get(cls)
        if found is None:
            names = frozenset(a.name for a in attrs.fields(cls) if a.name != "unknown_fields")
            found = self._known[cls] = (names, _structure_hook(self.converter, cls))
        known, structure = found
        if known.issuperset(fields):
            return structure(fields, cls)
        value = structure({k: fields[k] for k in fields if k in known}, cls)
        unknown = {k: fields[k] for k in fields if k not in known}
        return attrs.evolve(value, unknown_fields=unknown)

    def _structure_source(self, data: Any, _: Any) -> Source:
        tag = data.get("type") if isinstance(data, dict) else None
        if not isinstance(tag, str):
            raise DecodeError("", "a media source must be an object with a string 'type' tag")
        fields = data.copy()
        del fields["type"]
        cls = _SOURCES.get(tag)
        if cls is None:
            return UnknownSource(tag, fields)
        source: Source = self._structure_known(fields, cls)
        if isinstance(source, Base64Source):
            _check_base64(source.data)
        return source

    def _structure_sequence(self, data: Any, cls: Any) -> Any:
        """Lists and tuples must be JSON arrays: a string is not silently split into letters."""
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"expected an array, got {type(data).__name__} {data!r:.40}")
        args = get_args(cls)
        origin = get_origin(cls)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(data):
                raise TypeError(f"expected an array of {len(args)} items, got {len(data)}")
            types = list(args)
        else:
            types = [args[0] if args else Any] * len(data)
        items = []
        for i, (item, kind) in enumerate(zip(data, types, strict=True)):
            try:
                items.append(item if kind is Any else self.converter.structure(item, kind))
            except DecodeError as exc:
                raise exc.under(f"[{i}]") from None
            except Exception as exc:
                path, problem = _explain(exc)
                raise DecodeError(join_path(f"[{i}]", path), problem) from None
        return tuple(items) if origin is tuple else items

    def _structure_any_dict(self, data: Any, _: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        for key in data:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {key!r}")
        return data

    def _unstructure_block(self, block: Block) -> dict[str, Any]:
        if isinstance(block, UnknownBlock):
            return {"type": block.type, **block.fields}
        cls = type(block)
        fn = self._unstructurers.get(cls)
        if fn is None:
            fn = self._unstructurers[cls] = make_dict_unstructure_fn(
                cls,
                self.converter,
                extra=override(omit_if_default=True),
                unknown_fields=override(omit=True),
            )
        return {"type": cls.type, **block.unknown_fields, **fn(block)}

    def _unstructure_content(self, content: str | list[Block]) -> str | list[Any]:
        """A message's content (or a tool result's output): each block dumped directly, not
        dispatched on its type, as every message a store or a server keeps has some."""
        if isinstance(content, str):
            return content
        block, other = self._unstructure_block, self.converter.unstructure
        return [block(b) if isinstance(b, Block) else other(b) for b in content]

    def _unstructure_source(self, source: Source) -> dict[str, Any]:
        if isinstance(source, UnknownSource):
            return {"type": source.type, **source.fields}
        known = {
            a.name: v
            for a in attrs.fields(type(source))
            if a.name != "unknown_fields" and (v := getattr(source, a.name)) is not None
        }
        return {"type": source.type, **source.unknown_fields, **known}


def _structure_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    """The hook ``conv.structure(data, cls)`` dispatches to, found once, not on every call."""
    get: Any = getattr(conv, "get_structure_hook", None)  # cattrs 24 and later
    if get is None:
        get = conv._structure_func.dispatch  # what cattrs 23's structure() calls
    hook: Callable[[Any, Any], Any] = get(cls)
    return hook


def _usage_unstructurer(conv: cattrs.Converter) -> Callable[[Usage], dict[str, Any]]:
    """Usage as JSON, leaving out the counts no one filled, so that a cassette recorded before
    they existed stays byte-for-byte the same when re-recorded."""
    always = {"input_tokens", "output_tokens", "seconds"}
    omitted = {
        a.name: override(omit_if_default=True) for a in attrs.fields(Usage) if a.name not in always
    }
    return make_dict_unstructure_fn(Usage, conv, **omitted)  # type: ignore[arg-type]


def _check_base64(data: str) -> None:
    import base64
    import binascii

    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError("data", f"not valid base64: {exc}") from None


def _structure_float(value: Any, _: Any) -> float:
    if type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number (NaN and Infinity are refused)")
    return float(value)


def _structure_role(value: Any, _: Any) -> str:
    if value not in ROLES:
        raise ValueError(f"expected 'user', 'assistant' or 'system', got {value!r:.40}")
    return value  # type: ignore[no-any-return]


def _is_block_class(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, Block)


def _is_source_class(t: Any) -> bool:
    return t in (URLSource, Base64Source, UnknownSource, Source)


def _is_content(t: Any) -> bool:
    return set(get_args(t)) == {str, list[Block]}


def _is_list_or_tuple(t: Any) -> bool:
    return get_origin(t) in (list, tuple) and t != list[Block]


def _is_any_dict(t: Any) -> bool:
    return bool(t == dict[str, Any])
