"""The kernel: one pluggy plugin manager, the registries it fills, and the event stream."""

from __future__ import annotations

import functools
import inspect
import os
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import pluggy

from . import builtins, hookspecs
from .blocks import Block
from .codec import Codec
from .errors import ConfigurationError, DuplicateRegistrationError, PluginError
from .http import DEFAULT_CONNECTIONS, HTTPPool, connection_limit
from .prices import Price, PriceTable, price_entry
from .progress import Progress
from .proxies import proxies_of
from .registry import Registry
from .secret import Secrets
from .usage import UsageLedger

if TYPE_CHECKING:
    from .events import Event
    from .faults import FaultPolicy, FaultReport, IncidentStore
    from .retry import RetryPolicy
    from .usage import Budget

BUILTIN = "aopkit"
ENTRY_POINT_GROUP = "aopkit"


@attrs.frozen
class Command:
    """An ``aopkit`` subcommand: ``run(args, kernel)`` returns an exit code (or an awaitable)."""

    name: str
    run: Callable[..., Any]
    help: str = ""
    arguments: Callable[[Any], None] | None = None  # configures its argparse parser
    run_options: bool = False  # takes the flags of ``register_run_options`` (--trace, ...)


class RunPart(Protocol):
    """One run option switched on for one run: it wires each kernel of the run, then ends."""

    def attach(self, kernel: Kernel) -> None:
        """Wire ``kernel`` (called for every kernel of the run, as it is created)."""

    def finish(self) -> None:
        """The run is over: report, close files, stop servers."""


@attrs.frozen
class RunOption:
    """Flags a plugin adds to ``aopkit run``: ``arguments(parser)`` adds them; ``start(args)``
    returns a :class:`RunPart` when they were given, else None."""

    name: str
    arguments: Callable[[Any], None]
    start: Callable[[Any], RunPart | None]


ModelWrapper = Callable[[str, Callable[[], Any]], Any]


def _names(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return {n.strip() for n in items if n.strip()}


class Kernel:
    """Owns one plugin manager; two kernels in one process share nothing.

    ``plugins`` (or ``AOPKIT_PLUGINS``) allows only the named entry-point plugins; ``disable``
    (or ``AOPKIT_DISABLE_PLUGINS``) blocks plugins by name. A plugin that fails to import or
    register is recorded in :attr:`plugin_errors`, logged, and left out: the kernel still starts.
    ``prices`` (``{"provider:model": Price(...)}``) override the prices plugins register;
    ``budget`` limits every model call of this kernel (see :attr:`usage`). ``connections`` (or
    ``AOPKIT_CONNECTIONS``; default 1,024) caps the HTTP connections its models open at once,
    to all servers together, and so the model calls in flight: more calls wait for a free one.
    """

    def __init__(
        self,
        *,
        plugins: str | Iterable[str] | None = None,
        disable: str | Iterable[str] | None = None,
        load_entrypoints: bool = True,
        environ: Mapping[str, str] | None = None,
        prices: Mapping[str, Price | Mapping[str, Any]] | None = None,
        budget: Budget | None = None,
        connections: int | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.allowed = _names(plugins) if plugins is not None else _names(env.get("AOPKIT_PLUGINS"))
        self.disabled = (_names(disable) or set()) | (
            _names(env.get("AOPKIT_DISABLE_PLUGINS")) or set()
        )
        self.pm = pluggy.PluginManager("aopkit")
        self.pm.add_hookspecs(hookspecs)
        self.block_types = Registry("block type")
        self.models = Registry("model provider")
        self.formatters = Registry("formatter")
        self.correctors = Registry("corrector")
        self.critics = Registry("critic")
        self.compactors = Registry("compactor")
        self.tools = Registry("tool")
        self.commands = Registry("command")
        self.registered_prices = Registry("price")
        self.run_options = Registry("run option")
        self.runtimes = Registry("runtime")
        self._registrars: dict[str, tuple[Registry, Callable[..., tuple[str, Any]]]] = {
            "register_block_types": (self.block_types, _block_type_entry),
            "register_models": (self.models, _named_entry),
            "register_formatters": (self.formatters, _named_entry),
            "register_correctors": (self.correctors, _named_entry),
            "register_critics": (self.critics, _named_entry),
            "register_compactors": (self.compactors, _named_entry),
            "register_tools": (self.tools, _named_entry),
            "register_commands": (self.commands, _command_entry),
            "register_prices": (self.registered_prices, price_entry),
            "register_run_options": (self.run_options, _run_option_entry),
            "register_runtimes": (self.runtimes, _runtime_entry),
        }
        self.environ = env
        self.secrets = Secrets()  # every secret value this kernel knows, to scrub from text
        proxies = proxies_of(env)
        if proxies is not None:
            self.secrets.add(*proxies.secrets())
        if connections is not None:
            limit = connection_limit(connections, "Kernel(connections=...)")
        else:
            given = env.get("AOPKIT_CONNECTIONS") or str(DEFAULT_CONNECTIONS)
            value = int(given) if given.strip().isdigit() else given
            limit = connection_limit(value, "AOPKIT_CONNECTIONS")
        self.pool = HTTPPool(limit, proxies)
        self._config: dict[str, Any] | None = None
        self._faults: FaultReport | None = None
        self.progress = Progress(self)
        self._incidents: IncidentStore | None = None
        self.prices = PriceTable(self.registered_prices)  # the program's over the plugins'
        self.prices.update(prices or {})
        # every model call's usage, totalled per agent and model; budgets; the usage report: an
        # attribute, not a property made on first use, as every model call reads it twice
        self.usage = UsageLedger(self)
        if budget is not None:
            self.usage.budget = budget
        self.plugin_errors: dict[str, PluginError] = {}
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin -> (distribution, version)
        self.codec = Codec(self.block_types.objects)
        self.observed = False  # is anyone listening to events?
        self._listeners: list[tuple[Callable[..., Any], bool]] = []  # (function, wants kernel)
        self._pending: set[Any] = set()  # tasks of async event listeners, kept alive
        # ``wrapper(name, build)`` returns the model ``kernel.model(name)`` gives out; ``build()``
        # makes it as usual. How ``aopkit run --record/--replay`` puts cassettes under a program.
        self.model_wrappers: list[ModelWrapper] = []
        self.register(builtins, BUILTIN)
        for name in self.disabled - {BUILTIN}:
            self.pm.set_blocked(name)
        if load_entrypoints:
            self.load_entrypoints()
        for setup in list(_setups):
            setup(self)

    # -- plugins ----------------------------------------------------------------------------
    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register a plugin (a module or object with hook implementations) and everything it
        contributes; return its name, or None if it is blocked. On failure nothing of it stays."""
        try:
            name = self.pm.register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(name or _label(plugin), _one_line(self.pm, exc)) from exc
        except ValueError as exc:  # pluggy: name or object already registered
            first_line = str(exc).splitlines()[0]  # pluggy appends every plugin it knows
            raise PluginError(name or _label(plugin), first_line) from exc
        if name is None:
            return None
        unknown = _unknown_hooks(self.pm, plugin)
        if unknown:
            self.pm.unregister(plugin, name)
            raise PluginError(name, unknown)
        try:
            for hook_name, (registry, entry) in self._registrars.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=_registrar(registry, entry, name))
        except PluginError:
            self._drop(plugin, name)
            raise
        except Exception as exc:
            self._drop(plugin, name)
            raise PluginError(name, f"{hook_name} raised {type(exc).__name__}: {exc}") from exc
        self._refresh_listeners()
        return name

    def unregister(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            raise PluginError(name, "is not registered")
        self._drop(plugin, name)

    def _drop(self, plugin: object, name: str) -> None:
        for registry, _ in self._registrars.values():
            registry.drop(name)
        self.pm.unregister(plugin, name)
        self._refresh_listeners()

    def load_entrypoints(self) -> None:
        """Load plugins of entry-point group ``aopkit``, honouring the allow- and block-lists."""
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or ep.name in self.disabled:
                continue
            if self.allowed is not None and ep.name not in self.allowed:
                continue
            try:
                plugin = ep.load()
                self.register(plugin, ep.name)
            except DuplicateRegistrationError:
                raise  # which of the two wins must be the user's choice, not load order
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, PluginError)
                    else PluginError(
                        ep.name, f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                    )
                )
                self.plugin_errors[ep.name] = error
                from loguru import logger

                logger.warning("aopkit: left out {}", error)
                continue
            if ep.dist is not None:
                self.distributions[ep.name] = (ep.dist.name, ep.dist.version)

    def check_pending(self) -> None:
        """Raise :class:`PluginError` if a plugin implements a hook no spec defines. (Plugins
        are checked when they are registered; this catches hooks added to one afterwards.)"""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(self.pm.get_name(exc.plugin) or _label(exc.plugin), str(exc)) from exc

    def plugins(self) -> list[dict[str, Any]]:
        """What is loaded: name, version, hooks implemented and what each registered."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            if name is None or plugin is None:
                continue
            dist, version = self.distributions.get(name, (None, None))
            registered = {
                hook.removeprefix("register_"): registry.names_of(name)
                for hook, (registry, _) in self._registrars.items()
                if registry.names_of(name)
            }
            rows.append(
                {
                    "name": name,
                    "distribution": dist,
                    "version": version,
                    "hooks": sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()),
                    "registered": registered,
                }
            )
        rows.extend(
            {"name": name, "error": error.problem} for name, error in self.plugin_errors.items()
        )
        return sorted(rows, key=lambda row: row["name"])

    # -- events -----------------------------------------------------------------------------
    def _refresh_listeners(self) -> None:
        impls = reversed(self.pm.hook.event.get_hookimpls())  # pluggy's call order
        self._listeners = [(impl.function, "kernel" in impl.argnames) for impl in impls]
        self.observed = bool(self._listeners)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every listener in order. A failing listener is logged, never
        propagated: observing must not break the observed."""
        for listener, wants_kernel in self._listeners:
            try:
                result = (
                    listener(event=event, kernel=self) if wants_kernel else listener(event=event)
                )
            except Exception as exc:
                from loguru import logger

                # The traceback goes as redacted text, not as the exception: a sink with
                # loguru's ``diagnose`` would print every frame's variables, secrets among them.
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                logger.error(
                    "aopkit: event listener {} failed\n{}",
                    _label(listener),
                    self.secrets.redact(text),
                )
                continue
            if result is not None and inspect.isawaitable(result):
                import asyncio

                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def escalate(self, incident: Any) -> Any:
        """Ask the ``escalate`` implementations in turn (awaiting those that return awaitables)
        until one returns a resolution; None if every one declined."""
        for impl in reversed(self.pm.hook.escalate.get_hookimpls()):
            kwargs = {"incident": incident, "kernel": self}
            result = impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None

    # -- lookups ----------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The config file's contents (see :mod:`aopkit.config`), read on first use."""
        if self._config is None:
            from .config import load_config

            self._config = load_config(self.environ)
        return self._config

    @property
    def faults(self) -> FaultReport:
        """Every fault of this kernel's model calls and how it was resolved."""
        if self._faults is None:
            from .faults import FaultReport

            self._faults = FaultReport()
        return self._faults

    @property
    def incidents(self) -> IncidentStore:
        """Where unresolved faults are persisted (``AOPKIT_INCIDENTS``, else the XDG state dir)."""
        if self._incidents is None:
            from .faults import IncidentStore

            self._incidents = IncidentStore.default(self.environ)
        return self._incidents

    def model(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        faults: FaultPolicy | None = None,
        **options: Any,
    ) -> Any:
        """The model ``provider:model`` from the provider plugin registered under ``provider``;
        options from the arguments over those of the config file. ``retry`` sets its tier-1
        policy, ``faults`` its tiers 2-4 (correctors, critics, escalation)."""
        from .config import model_options

        if not isinstance(name, str):
            raise ConfigurationError(f"a model name is a 'provider:model' str, got {name!r:.80}")
        provider, sep, model = name.partition(":")
        if not sep or not model or not provider:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigurationError(
                f"model names look like 'provider:model', got {name!r}; "
                f"the providers loaded are: {known}"
            )
        factory = self.models[provider]

        def build() -> Any:
            return factory(model, kernel=self, **{**model_options(self.config, name), **options})

        for wrapper in self.model_wrappers:
            build = functools.partial(wrapper, name, build)
        instance = build()
        if retry is not None:
            instance.retry = retry
        if faults is not None:
            instance.fault_policy = faults
        return instance

    async def aclose(self) -> None:
        """Release the kernel's resources (its pooled HTTP session)."""
        await self.pool.close()

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _label(obj: object) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _one_line(pm: pluggy.PluginManager, error: pluggy.PluginValidationError) -> str:
    """pluggy's complaint about a hook implementation on one line, with the arguments the
    hook takes: "hook 'event': hookimpl definition: event(evnt); Argument(s) ..."."""
    first, *rest = str(error).splitlines()
    hook = first.rpartition(" for ")[2] or first
    caller = getattr(pm.hook, hook.removeprefix("hook ").strip("'"), None)
    spec = getattr(caller, "spec", None)
    takes = f" (the hook takes: {', '.join(spec.argnames)})" if spec is not None else ""
    return f"{hook}: {'; '.join(rest)}{takes}"


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """What is wrong with a plugin implementing hooks no spec defines (a misspelled name),
    with the closest real hook names; None if every hook it implements exists."""
    import difflib

    specs = [name for name in vars(hookspecs) if pm.parse_hookspec_opts(hookspecs, name)]
    problems = []
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.has_spec() or all(i.optionalhook for i in caller.get_hookimpls()):
            continue
        close = difflib.get_close_matches(caller.name, specs, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(f"implements {caller.name!r}, which is not an aopkit hook{hint}")
    if not problems:
        return None
    return "; ".join(problems) + f" (the hooks are: {', '.join(sorted(specs))})"


def _registrar(
    registry: Registry, entry: Callable[..., tuple[str, Any]], plugin: str
) -> Callable[..., None]:
    def register(*args: Any, replace: bool = False, **kwargs: Any) -> None:
        registry.add(*entry(*args, **kwargs), plugin, replace=replace)

    return register


def _named_entry(name: str, obj: Any) -> tuple[str, Any]:
    return name, obj


def _runtime_entry(name: str, runtime: Any) -> tuple[str, Any]:
    if not callable(getattr(runtime, "pools", None)):
        raise TypeError(f"runtime {name!r} needs a pools(agents, size, **options) method")
    return name, runtime


def _block_type_entry(cls: type) -> tuple[str, type]:
    if not (isinstance(cls, type) and issubclass(cls, Block) and attrs.has(cls)):
        raise TypeError(f"a block type must be an attrs subclass of aopkit.Block, got {cls!r}")
    tag = cls.__dict__.get("type")
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"block type {cls.__name__} needs its own non-empty string 'type' tag")
    return tag, cls


def _command_entry(
    name: str,
    run: Callable[..., Any],
    help: str = "",
    arguments: Callable[[Any], None] | None = None,
    run_options: bool = False,
) -> tuple[str, Command]:
    summary = help or (inspect.getdoc(run) or "").split("\n")[0]
    return name, Command(name, run, summary, arguments, run_options)


def _run_option_entry(
    name: str, arguments: Callable[[Any], None], start: Callable[[Any], RunPart | None]
) -> tuple[str, RunOption]:
    return name, RunOption(name, arguments, start)


_default: Kernel | None = None
_setups: list[Callable[[Kernel], None]] = []


@contextmanager
def each_kernel(setup: Callable[[Kernel], None]) -> Iterator[None]:
    """Call ``setup(kernel)`` on the default kernel if it exists and on every kernel created
    until the block ends: how ``aopkit run`` wires kernels a program makes for itself."""
    _setups.append(setup)
    try:
        if _default is not None:
            setup(_default)
        yield
    finally:
        _setups.remove(setup)


def default_kernel() -> Kernel:
    """The process's default kernel, created on first use; hosts create their own instead."""
    global _default
    if _default is None:
        _default = Kernel()
    return _default
