"""Tools: Python functions (sync, async or async generators) that models can call.

The schema a model sees is built once, from the signature, the type hints and the docstring.
Calls never raise into the agent: a failing tool, an unknown name or bad arguments come back as
an error result the model can read and act on.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import re
import time
import typing
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .blocks import Block, TextBlock, ToolResultBlock, ToolUseBlock
from .docstrings import parse_docstring
from .errors import AopkitError, DecodeError
from .events import ToolFinished, ToolStarted
from .models import ToolSpec
from .schema import SchemaError, Schemas, json_default
from .secret import Secret, Secrets, names_a_credential

if TYPE_CHECKING:
    from .kernel import Kernel

Output = str | list[Block]
VALID_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what OpenAI, Anthropic and Gemini all accept


class ToolError(AopkitError):
    """A tool could not be defined (a bad signature) — raised when the tool is made."""


class Tool:
    """A callable a model can use. Build one with :func:`tool` or :meth:`Toolkit.add`.

    ``preset`` arguments are filled in by the program and hidden from the model.
    ``idempotent=True`` says running it twice does no harm: a durable run resumed after a
    crash mid-call runs it again (otherwise the escalate hook decides). ``approve=True``: each
    call waits for a person's approval (see :mod:`aopkit.durable`).
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
        idempotent: bool = False,
        approve: bool = False,
    ) -> None:
        if not callable(func):
            raise ToolError(f"a tool must be a function or a callable, got {func!r:.80}")
        self.func = func
        self.thread = thread  # run a blocking sync function in a worker thread
        self.idempotent = _flag(idempotent, "idempotent", func)
        self.approve = _flag(approve, "approve", func)
        self.name = tool_name(func, name)
        self.preset = dict(preset or {})
        self.group = group
        code = _code_of(func)
        self.is_stream = inspect.isasyncgenfunction(code)
        self.is_async = inspect.iscoroutinefunction(code)
        summary, arg_docs = parse_docstring(_documented(func, code))
        self.description = description if description is not None else summary
        self.parameters, self._types, self._variadic = self._describe(arg_docs)
        self.spec = ToolSpec(self.name, self.description, self.parameters)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"

    def _describe(self, arg_docs: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
        try:
            signature = inspect.signature(self.func)
        except (TypeError, ValueError) as exc:  # a class or builtin Python cannot inspect
            raise ToolError(f"tool {self.name!r}: cannot read its signature: {exc}") from None
        try:
            hints = typing.get_type_hints(_code_of(self.func))
        except Exception as exc:  # an undefined name, a hint that is not Python, a bad type
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
        fixed = set(self.func.keywords) if isinstance(self.func, functools.partial) else set()
        for param in signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                variadic = True
                continue
            if param.kind is param.VAR_POSITIONAL or param.name in {*self.preset, *fixed}:
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
            elif json_default(param.default):
                prop["default"] = param.default
            properties[param.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if not variadic:
            schema["additionalProperties"] = False
        return schemas.rooted(schema), types, variadic

    def with_options(self, **options: Any) -> Tool:
        """A copy under another name, description, group or threading; the schema is kept (so
        tools built from a schema, such as MCP tools, keep theirs)."""
        unknown = set(options) - {"name", "description", "group", "thread", "idempotent", "approve"}
        if unknown:
            raise ToolError(
                f"tool {self.name!r}: {sorted(unknown)} cannot be changed on an existing tool; "
                "make a new Tool from the function"
            )
        if "name" in options:
            tool_name(self.func, options["name"])
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
            if kind is Any or type(value) is kind:  # as given: what the codec would return
                out[key] = value
                continue
            try:
                out[key] = kernel.codec.load(value, kind)
            except DecodeError as exc:
                raise exc.under(key) from None
        for name in self.parameters["required"]:  # a loop: a comprehension is a call
            if name not in out:
                raise DecodeError(name, "required argument is missing")
        return out

    async def result(self, arguments: Mapping[str, Any]) -> Any:
        """What a tool that does not stream returns (a plain function in a worker thread if
        ``thread``)."""
        kwargs = {**arguments, **self.preset}
        if self.is_async:
            return await self.func(**kwargs)
        if self.thread:
            return await asyncio.to_thread(self.func, **kwargs)
        return self.func(**kwargs)

    def items(self, arguments: Mapping[str, Any]) -> AsyncIterator[Any]:
        """What a streaming tool yields, as it comes."""
        items: AsyncIterator[Any] = self.func(**arguments, **self.preset)
        return items


def _flag(value: object, name: str, func: object) -> bool:
    if not isinstance(value, bool):
        raise ToolError(f"tool {func!r:.60}: {name} must be True or False, got {value!r:.40}")
    return value


def tool_name(func: Callable[..., Any], name: str | None = None) -> str:
    """The name a model calls the tool by: ``name``, else the function's own name (a
    ``functools.partial`` has its function's; a callable object its class's). It must match
    ``[a-zA-Z0-9_-]{1,64}``, which every provider accepts: a lambda's ``<lambda>`` does not."""
    derived = name
    if derived is None:
        inner = func.func if isinstance(func, functools.partial) else func
        derived = getattr(inner, "__name__", None) or type(inner).__name__
    if not isinstance(derived, str) or not VALID_NAME.fullmatch(derived):
        given = "" if name is None else "name= "
        raise ToolError(
            f"tool {given}{derived!r} is not a valid tool name: models accept only letters, "
            "digits, '_' and '-', 1 to 64 of them"
            + ("; pass name=, e.g. Tool(func, name='add')" if name is None else "")
        )
    return derived


def _documented(func: Callable[..., Any], code: Callable[..., Any]) -> object:
    """Where the tool's description is: a partial's function, a callable object's class (or
    its ``__call__`` when the class says nothing)."""
    if isinstance(func, functools.partial) or inspect.isroutine(func):
        return code
    return func if inspect.getdoc(func) else code


def _code_of(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function that runs: a partial's function, a callable object's ``__call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isroutine(func) or inspect.isclass(func):
        return func
    call: Callable[..., Any] = type(func).__call__.__get__(func)  # a callable object's
    return call


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    preset: Mapping[str, Any] | None = None,
    group: str | None = None,
    thread: bool = False,
    idempotent: bool = False,
    approve: bool = False,
) -> Any:
    """``@tool`` or ``@tool(name=..., preset=..., group=...)``: make a function a :class:`Tool`.
    Sync functions run in the event loop unless ``thread=True`` (for blocking work); for
    ``idempotent`` and ``approve`` see :class:`Tool`."""

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            preset=preset,
            group=group,
            thread=thread,
            idempotent=idempotent,
            approve=approve,
        )

    return make(func) if func is not None else make


class Toolkit:
    """The tools an agent may call, in groups that can be switched on and off.

    ``await toolkit.call(use)`` runs a model's tool call and always returns a result block;
    ``toolkit.stream(use)`` yields partial results of streaming tools as they come.
    ``approve`` is a policy over all its tools: True (every call needs a person's approval) or
    ``approve(tool_name, arguments) -> bool``; a tool made with ``approve=True`` always does.
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        kernel: Kernel | None = None,
        approve: bool | Callable[[str, Mapping[str, Any]], bool] = False,
    ) -> None:
        from .agent import _check_kernel

        if not isinstance(approve, bool) and not callable(approve):
            raise ToolError(
                f"Toolkit(approve=) takes True, False or a function (tool name, arguments) -> "
                f"bool, got {approve!r:.60}"
            )
        self.approve = approve
        self._kernel = _check_kernel(kernel)
        self._users: weakref.WeakSet[Kernel] = weakref.WeakSet()  # kernels that called it
        self._secrets: list[Callable[[Secrets], None]] = []
        if isinstance(tools, (str, bytes, Tool)) or not isinstance(tools, Iterable):
            raise ToolError(f"Toolkit(tools) takes a list of tools, got {tools!r:.80}")
        self.tools: dict[str, Tool] = {}
        self.inactive: set[str] = set()  # groups switched off
        self._specs: list[ToolSpec] | None = None
        for item in tools:
            self.add(item)

    @property
    def kernel(self) -> Kernel:
        """The kernel given at construction, else the default one. Agents pass their own
        kernel to :meth:`call`, so a toolkit built without ``kernel=`` reports each call to
        the kernel of the agent making it."""
        if self._kernel is None:
            from .kernel import default_kernel

            return default_kernel()
        return self._kernel

    @classmethod
    def of(cls, tools: Toolkit | Iterable[Tool | Callable[..., Any]] | None) -> Toolkit:
        """A toolkit, or a new one holding a list of tools and functions (what agents take)."""
        if isinstance(tools, Toolkit):
            return tools
        return cls(() if tools is None else tools)

    def usable_by(self, kernel: Kernel, agent: str) -> None:
        """Raise unless agents of ``kernel`` may use this toolkit: one built with ``kernel=``
        belongs to that kernel only."""
        if self._kernel is not None and self._kernel is not kernel:
            raise AopkitError(
                f"agent {agent!r}: its toolkit was built for another kernel (Toolkit(kernel=...))"
                "; build it without kernel= to share it between kernels, or give the agent "
                "the toolkit's kernel"
            )

    def keep_secret(
        self,
        *values: Secret | str | None,
        headers: Mapping[str, str | Secret] | None = None,
        url: str | None = None,
    ) -> None:
        """Credentials the tools carry (values, credential headers, a URL's password): every
        kernel that runs this toolkit's tools scrubs them from its events, logs and traces."""

        def add(secrets: Secrets) -> None:
            secrets.add(*values)
            if headers:
                secrets.add_headers(headers)
            if url:
                secrets.add_url(url)

        self._secrets.append(add)
        for kernel in {*self._users, *([self._kernel] if self._kernel else [])}:
            add(kernel.secrets)

    def _use_by(self, kernel: Kernel) -> None:
        if kernel is not self._kernel and kernel not in self._users:  # its own has them all
            self._users.add(kernel)
            for add in self._secrets:
                add(kernel.secrets)

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

    def add_registered(self, *names: str, kernel: Kernel | None = None) -> None:
        """Add tools that plugins registered through the ``register_tools`` hook of ``kernel``
        (default: :attr:`kernel`)."""
        for name in names:
            registered = (kernel or self.kernel).tools[name]
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

    def needs_approval(self, use: ToolUseBlock) -> bool:
        """Whether a person must approve this call before it runs (an unknown tool: no, it
        only gets an error result)."""
        found = self.active(use.name)
        if found is None:
            return False
        if found.approve or self.approve is True:
            return True
        return callable(self.approve) and bool(self.approve(use.name, use.input))

    def specs(self) -> list[ToolSpec]:
        """What the model is shown: the active tools (computed once per change)."""
        if self._specs is None:
            self._specs = [t.spec for t in self.tools.values() if t.group not in self.inactive]
        return self._specs

    async def call(
        self,
        use: ToolUseBlock,
        *,
        kernel: Kernel | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> ToolResultBlock:
        """Run ``use`` to the end and return its result (an error result if anything failed,
        a cancel from within the tool included); cancelling the caller cancels the tool.
        Its events go to ``kernel`` (agents pass theirs), else to :attr:`kernel`.
        ``arguments``: what :meth:`Tool.arguments` made of ``use.input`` already, if the
        caller checked them (not checked again)."""
        kernel = kernel or self.kernel
        found = self._ready(use, kernel, arguments)
        if isinstance(found, ToolResultBlock):
            return found
        tool, arguments = found
        if not tool.is_stream:  # no async generator: each costs a hook and a weak reference
            return await self._result(use, tool, arguments, kernel)
        results = [result async for result in self._streamed(use, tool, arguments, kernel)]
        return results[-1]

    async def stream(
        self, use: ToolUseBlock, *, kernel: Kernel | None = None
    ) -> AsyncIterator[ToolResultBlock]:
        """Partial results of a streaming tool (each holds everything so far), then the final
        one; a plain tool yields its one result."""
        kernel = kernel or self.kernel
        found = self._ready(use, kernel)
        if isinstance(found, ToolResultBlock):
            yield found
        elif not found[0].is_stream:
            yield await self._result(use, *found, kernel)
        else:
            async for result in self._streamed(use, *found, kernel):
                yield result

    def _ready(
        self, use: ToolUseBlock, kernel: Kernel, arguments: dict[str, Any] | None = None
    ) -> tuple[Tool, dict[str, Any]] | ToolResultBlock:
        """The tool ``use`` names and its arguments (checked here unless given), or the error
        result that says why not."""
        self._use_by(kernel)
        found = self.active(use.name)
        if found is None:
            known = ", ".join(t.name for t in self.tools.values() if t.group not in self.inactive)
            return _error(use, f"unknown tool {use.name!r}; available tools: {known or 'none'}")
        if arguments is None:
            try:
                if use.raw_input is not None:
                    raise DecodeError(
                        "", f"the arguments are not a JSON object: {use.raw_input!r:.200}"
                    )
                arguments = found.arguments(use.input, kernel)
            except DecodeError as exc:
                return _error(use, f"invalid arguments: {exc}")
        # Credentials the program presets (``api_key=...``) join the kernel's secrets, so an
        # error or a result that echoes one is scrubbed.
        preset = found.preset
        if preset:
            kernel.secrets.add(
                *(v for k, v in preset.items() if isinstance(v, str) and names_a_credential(k))
            )
        return found, arguments

    async def _result(
        self, use: ToolUseBlock, tool: Tool, arguments: dict[str, Any], kernel: Kernel
    ) -> ToolResultBlock:
        started = _started(kernel, use)
        try:
            value = await tool.result(arguments)
        except (asyncio.CancelledError, Exception) as exc:
            error = _stopped_by(kernel, use, started, exc)
            if error is None:
                raise
        else:
            _finished(kernel, use, started, None)
            return ToolResultBlock(use.id, use.name, _output([value], kernel))
        _finished(kernel, use, started, error)
        return _error(use, error)

    async def _streamed(
        self, use: ToolUseBlock, tool: Tool, arguments: dict[str, Any], kernel: Kernel
    ) -> AsyncIterator[ToolResultBlock]:
        started = _started(kernel, use)
        parts: list[Any] = []
        error = None
        try:
            async for item in tool.items(arguments):
                parts.append(item)
                yield ToolResultBlock(use.id, use.name, _output(parts, kernel))
        except (asyncio.CancelledError, Exception) as exc:
            error = _stopped_by(kernel, use, started, exc)
            if error is None:
                raise
        _finished(kernel, use, started, error)
        if error is not None:
            yield _error(use, error)
        elif not parts:  # a stream that yielded nothing still ends with a result
            yield ToolResultBlock(use.id, use.name, _output(parts, kernel))


def _stopped_by(
    kernel: Kernel, use: ToolUseBlock, started: float, exc: BaseException
) -> str | None:
    """The error result's text for what stopped a tool, or None for a cancel that is its
    caller's decision (announced here; the caller raises it on)."""
    if not isinstance(exc, asyncio.CancelledError):
        return kernel.secrets.redact(f"{type(exc).__name__}: {exc}")
    if _being_cancelled():
        _finished(kernel, use, started, "CancelledError: stopped before it finished")
        return None
    return "CancelledError: the tool was cancelled from within"


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop, as opposed to a tool whose own inner work
    was cancelled (a tool error). Python 3.10 cannot tell them apart: it assumes the former."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _started(kernel: Kernel, use: ToolUseBlock) -> float:
    started = time.perf_counter()
    if kernel.observed:
        kernel.emit(ToolStarted(tool=use.name, call_id=use.id))
    return started


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
    if len(parts) == 1 and not _blocks_in(parts[0]):  # what a tool that does not stream gives
        return scrub(_text(parts[0], kernel))
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
    if type(value) in _NUMBERS:  # as JSON writes them: the codec would give them back as they are
        return _as_json(value)
    try:
        return _as_json(kernel.codec.dump(value))
    except Exception:  # whatever a tool returned, the model gets something to read
        return str(value)


_NUMBERS = frozenset((int, float, bool))
_as_json = json.JSONEncoder(ensure_ascii=False, default=str).encode  # made once, not per call
