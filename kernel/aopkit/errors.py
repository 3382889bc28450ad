"""One small error hierarchy: every error aopkit raises is an :class:`AopkitError`."""

from __future__ import annotations


class AopkitError(Exception):
    """Root of every error aopkit raises on purpose."""


class DecodeError(AopkitError, ValueError):
    """Malformed serialised input; ``path`` names the bad field, e.g. ``content[2].source.data``."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path.lstrip(".")
        self.problem = problem
        super().__init__(f"{self.path or '<root>'}: {problem}")

    def under(self, prefix: str) -> DecodeError:
        """The same error, its path seen from one level up (``prefix`` + path)."""
        return DecodeError(join_path(prefix, self.path), self.problem)


class EncodeError(AopkitError, ValueError):
    """A value JSON cannot hold (or that would not load back); ``path`` names it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path.lstrip(".")
        self.problem = problem
        super().__init__(f"{self.path or '<root>'}: {problem}")


def join_path(prefix: str, path: str) -> str:
    """``content`` + ``[2].source`` -> ``content[2].source``; ``a`` + ``b`` -> ``a.b``."""
    if not path or not prefix:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


class MessageTypeError(AopkitError, TypeError):
    """Something that is not a message was given where one is expected; ``argument`` names
    where (``msg``, ``announcement``, ``messages[2]``)."""

    def __init__(
        self, argument: str, value: object, expected: str = "an aopkit.Msg or a str"
    ) -> None:
        self.argument = argument
        super().__init__(
            f"{argument}: expected {expected}, got {type(value).__name__} {value!r:.80}"
        )


class ConfigurationError(AopkitError, ValueError):
    """A constructor argument is wrong (a bad model name, a negative step count...); the
    message names the argument and what it accepts."""


class PluginError(AopkitError):
    """A plugin could not be loaded, validated or registered; ``plugin`` is its name."""

    def __init__(self, plugin: str, problem: str) -> None:
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"plugin {plugin!r}: {problem}")


class DuplicateRegistrationError(PluginError):
    """Two plugins claimed one name in one registry."""

    def __init__(self, registry: str, name: str, first: str, second: str) -> None:
        self.registry = registry
        self.name = name
        self.first = first
        super().__init__(
            second,
            f"{registry} {name!r} is already registered by plugin {first!r}; "
            f"block one of the two (AOPKIT_DISABLE_PLUGINS={second} or {first}), or, to "
            "override on purpose, register it with register(..., replace=True)",
        )


class LookupFailed(AopkitError, LookupError):
    """A name (model provider, formatter, tool...) is not registered by any loaded plugin."""


class ReplyError(AopkitError):
    """An agent's reply raised; the original exception is ``__cause__``."""

    def __init__(self, agent: str, cause: BaseException) -> None:
        self.agent = agent
        super().__init__(f"agent {agent!r} failed to reply: {type(cause).__name__}: {cause}")


class StoreError(AopkitError):
    """A store (sessions, incidents) could not save or load; the message names the store."""


class Claimed(StoreError):
    """A store's claim on a name is held by someone else (another process, or another task
    of this one), and was not given up within the time allowed."""
