"""Tools: Python functions (sync, async or async generators) that models can call.

The schema a model sees is built once, from the signature, the type hints and the docstring.
Calls never raise into the agent: a failing tool, an unknown name or bad arguments come back as
an error result the model can read and act on.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .blocks import Block, TextBlock, ToolResultBlock, ToolUseBlock
from .docstrings import parse_docstring
from .errors import AopkitError, DecodeError
from .events import ToolFinished, ToolStarted
from .models import ToolSpec
from .schema import SchemaError, Schemas
from .secret import names_a_credential

if TYPE_CHECKING:
    from .kernel import Kernel

Output = str | list[Block]


class ToolError(AopkitError):
    """A tool could not be defined (a bad signature) — raised when the tool is made."""


class Tool:
    """A callable a model can use. Build one with :func:`tool` or :meth:`Toolkit.add`.

    ``preset`` arguments are filled in by the program and hidden from the model.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        preset: Mapping[str, Any] | None = None,
        group: str | None = None,
        thread: bool = False,
    ) -> None:
        self.func = func
        self.thread = thread  # run a blocking sync function in a worker thread
        self.name = name or func.__name__
        self.preset = dict(preset or {})
        self.group = group
        self.is_stream = inspect.isasyncgenfunction(func)
        self.is_async = inspect.iscoroutinefunction(func)
        summary, arg_docs = parse_docstring(func)
        self.description = description if description is not None else summary
        self.parameters, self._types, self._variadic = self._describe(arg_docs)
        self.spec = ToolSpec(self.name, self.description, self.parameters)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"

    def _describe(self, arg_docs: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
        signature = inspect.signature(self.func)
        try:
            hints = typing.get_type_hints(self.func)
        except NameError as exc:
            raise ToolError(f"tool {self.name!r}: cannot resolve its type hints: {exc}") from None
        unknown = set(self.preset) - set(signature.parameters)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            raise ToolError(
                f"tool {self.name!r}: preset arguments {sorted(unknown)} are not "
                "parameters of the function"
            )
        properties: dict[str, Any] = {}
        required: list[str] = []
        types: dict[str, Any] = {}
        schemas = Schemas()
        variadic = False
        for param in signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                variadic = True
                continue
            if param.kind is param.VAR_POSITIONAL or param.name in self.preset:
                continue
            annotation = hints.get(param.name, Any)
            types[param.name] = annotation
            try:
                prop = schemas.of(annotation)
            except SchemaError as exc:
                raise ToolError(f"tool {self.name!r}, argument {param.name!r}: {exc}") from None
            if param.name in arg_docs:
                prop["description"] = arg_docs[param.name]
            if param.default is param.empty:
                required.append(param.name)
            elif isinstance(param.default, (str, int, float, bool, type(None))):
                prop["default"] = param.default
            properties[param.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if not variadic:
            schema["additionalProperties"] = False
        return schemas.rooted(schema), types, variadic

    def with_options(self, **options: Any) -> Tool:
        """A copy under another name, description, group or threading; the schema is kept (so
        tools built from a schema, such as MCP tools, keep theirs)."""
        unknown = set(options) - {"name", "description", "group", "thread"}
        if unknown:
            raise ToolError(
                f"tool {self.name!r}: {sorted(unknown)} cannot be changed on an existing tool; "
                "make a new Tool from the function"
            )
        made = copy.copy(self)
        for key, value in options.items():
            setattr(made, key, value)
        made.spec = ToolSpec(made.name, made.description, made.parameters)
        return made

    def arguments(self, given: Mapping[str, Any], kernel: Kernel) -> dict[str, Any]:
        """Check the model's arguments against the signature; raise :class:`DecodeError` naming
        the bad argument. Values are converted to the annotated types (attrs classes,
        dataclasses, pydantic models, enums)."""
        if not isinstance(given, Mapping):
            raise DecodeError("", "tool arguments must be a JSON object")
        out: dict[str, Any] = {}
        for key, value in given.items():
            if key in self.preset:
                raise DecodeError(key, "is set by the program and cannot be given")
            if key not in self._types:
                if self._variadic:
                    out[key] = value
                    continue
                raise DecodeError(key, f"unexpected argument; expected {sorted(self._types)}")
            kind = self._types[key]
            try:
                out[key] = value if kind is Any else kernel.codec.load(value, kind)
            except DecodeError as exc:
                raise exc.under(key) from None
        missing = [k for k in self.parameters["required"] if k not in out]
        if missing:
            raise DecodeError(missing[0], "required argument is missing")
        return out

    async def run(self, arguments: Mapping[str, Any]) -> AsyncIterator[Any]:
        """Yield what the tool produces: one value, or a stream's items as they come."""
        kwargs = {**arguments, **self.preset}
        if self.is_stream:
            async for item in self.func(**kwargs):
                yield item
        elif self.is_async:
            yield await self.func(**kwargs)
        elif self.thread:
            yield await asyncio.to_thread(self.func, **kwargs)
        else:
            yield self.func(**kwargs)


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    preset: Mapping[str, Any] | None = None,
    group: str | None = None,
    thread: bool = False,
) -> Any:
    """``@tool`` or ``@tool(name=..., preset=..., group=...)``: make a function a :class:`Tool`.
    Sync functions run in the event loop unless ``thread=True`` (for blocking work)."""

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(
            f, name=name, description=description, preset=preset, group=group, thread=thread
        )

    return make(func) if func is not None else make


class Toolkit:
    """The tools an agent may call, in groups that can be switched on and off.

    ``await toolkit.call(use)`` runs a model's tool call and always returns a result block;
    ``toolkit.stream(use)`` yields partial results of streaming tools as they come.
    """

    def __init__(
        self, tools: Iterable[Tool | Callable[..., Any]] = (), *, kernel: Kernel | None = None
    ) -> None:
        self._kernel = kernel
        self.tools: dict[str, Tool] = {}
        self.inactive: set[str] = set()  # groups switched off
        self._specs: list[ToolSpec] | None = None
        for item in tools:
            self.add(item)

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            from .kernel import default_kernel

            self._kernel = default_kernel()
        return self._kernel

    def add(self, item: Tool | Callable[..., Any], **options: Any) -> Tool:
        """Add a tool (or a function, with :class:`Tool`'s options); names must be unique."""
        if isinstance(item, Tool):
            made = item.with_options(**options) if options else item
        else:
            made = Tool(item, **options)
        if made.name in self.tools:
            raise ToolError(f"the toolkit already has a tool named {made.name!r}")
        self.tools[made.name] = made
        self._specs = None
        return made

    def add_registered(self, *names: str) -> None:
        """Add tools that plugins registered through the ``register_tools`` hook."""
        for name in names:
            registered = self.kernel.tools[name]
            self.add(registered if isinstance(registered, Tool) else Tool(registered, name=name))

    def remove(self, name: str) -> None:
        del self.tools[name]
        self._specs = None

    def set_group(self, group: str, active: bool) -> None:
        """Switch a group of tools on or off."""
        if not any(t.group == group for t in self.tools.values()):
            raise ToolError(f"no tool is in group {group!r}")
        (self.inactive.discard if active else self.inactive.add)(group)
        self._specs = None

    def active(self, name: str) -> Tool | None:
        found = self.tools.get(name)
        return found if found is not None and found.group not in self.inactive else None

    def specs(self) -> list[ToolSpec]:
        """What the model is shown: the active tools (computed once per change)."""
        if self._specs is None:
            self._specs = [t.spec for t in self.tools.values() if t.group not in self.inactive]
        return self._specs

    async def call(self, use: ToolUseBlock) -> ToolResultBlock:
        """Run ``use`` to the end and return its result (an error result if anything failed,
        a cancel from within the tool included); cancelling the caller cancels the tool."""
        results = [result async for result in self.stream(use)]
        return results[-1]

    async def stream(self, use: ToolUseBlock) -> AsyncIterator[ToolResultBlock]:
        """Partial results of a streaming tool (each holds everything so far), then the final
        one; a plain tool yields its one result."""
        kernel = self.kernel
        found = self.active(use.name)
        if found is None:
            known = ", ".join(t.name for t in self.tools.values() if t.group not in self.inactive)
            yield _error(use, f"unknown tool {use.name!r}; available tools: {known or 'none'}")
            return
        try:
            if use.raw_input is not None:
                raise DecodeError(
                    "", f"the arguments are not a JSON object: {use.raw_input!r:.200}"
                )
            arguments = found.arguments(use.input, kernel)
        except DecodeError as exc:
            yield _error(use, f"invalid arguments: {exc}")
            return
        # Credentials the program presets (``api_key=...``) join the kernel's secrets, so an
        # error or a result that echoes one is scrubbed.
        kernel.secrets.add(
            *(v for k, v in found.preset.items() if isinstance(v, str) and names_a_credential(k))
        )
        started = time.perf_counter()
        if kernel.observed:
            kernel.emit(ToolStarted(tool=use.name, call_id=use.id))
        parts: list[Any] = []
        error = None
        try:
            async for item in found.run(arguments):
                parts.append(item)
                if found.is_stream:
                    yield ToolResultBlock(use.id, use.name, _output(parts, kernel))
        except asyncio.CancelledError:
            if _being_cancelled():  # the caller's decision: it goes on to the caller
                _finished(kernel, use, started, "CancelledError: stopped before it finished")
                raise
            error = "CancelledError: the tool was cancelled from within"
        except Exception as exc:
            error = kernel.secrets.redact(f"{type(exc).__name__}: {exc}")
        _finished(kernel, use, started, error)
        if error is not None:
            yield _error(use, error)
        elif not found.is_stream:
            yield ToolResultBlock(use.id, use.name, _output(parts, kernel))


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop, as opposed to a tool whose own inner work
    was cancelled (a tool error). Python 3.10 cannot tell them apart: it assumes the former."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _finished(kernel: Kernel, use: ToolUseBlock, started: float, error: str | None) -> None:
    if kernel.observed:
        kernel.emit(
            ToolFinished(
                tool=use.name,
                call_id=use.id,
                seconds=time.perf_counter() - started,
                error=error,
            )
        )


def _error(use: ToolUseBlock, message: str) -> ToolResultBlock:
    return ToolResultBlock(use.id, use.name, message, is_error=True)


def _output(parts: list[Any], kernel: Kernel) -> Output:
    """Text for plain values (JSON for data), scrubbed of the kernel's secrets; blocks stay
    blocks, so media a tool returns reach the model."""
    scrub = kernel.secrets.redact
    if not any(_blocks_in(p) for p in parts):
        return scrub("".join(_text(p, kernel) for p in parts))
    blocks: list[Block] = []
    for part in parts:
        for item in part if _blocks_in(part) and isinstance(part, list) else [part]:
            blocks.append(
                item if isinstance(item, Block) else TextBlock(scrub(_text(item, kernel)))
            )
    return blocks


def _blocks_in(part: Any) -> bool:
    return isinstance(part, Block) or (
        isinstance(part, list) and any(isinstance(i, Block) for i in part)
    )


def _text(value: Any, kernel: Kernel) -> str:
    """A value as the model reads it: JSON for data (attrs, dataclass and pydantic instances
    included, under the names their schemas show), ``str()`` for what JSON cannot hold."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        import json

        return json.dumps(kernel.codec.dump(value), ensure_ascii=False, default=str)
    except Exception:  # whatever a tool returned, the model gets something to read
        return str(value)
