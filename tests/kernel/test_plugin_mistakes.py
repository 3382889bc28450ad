"""Plugin mistakes are reported when the plugin loads, by its name: a misspelled hook, and a
name another plugin already registered (unless one of them overrides it on purpose)."""

from __future__ import annotations

import sys
import textwrap

import attrs
import pytest

import aopkit
from aopkit import DuplicateRegistrationError, Kernel, PluginError, hookimpl


class Tools:
    @hookimpl
    def register_tool(self, register):  # misspelled: the hook is register_tools
        register("search", object())


class Listener:
    @hookimpl
    def evnt(self, event):  # misspelled: the hook is event
        pass


class WrongArgument:
    @hookimpl
    def event(self, evnt):
        pass


@pytest.mark.parametrize(
    ("plugin", "wrong", "meant"),
    [(Tools(), "register_tool", "register_tools"), (Listener(), "evnt", "event")],
)
def test_a_misspelled_hook_is_an_error_naming_the_plugin_and_the_hook(plugin, wrong, meant):
    kernel = Kernel(environ={"AOPKIT_PLUGINS": ""})
    with pytest.raises(PluginError) as info:
        kernel.register(plugin, "mine")
    message = str(info.value)
    assert message.startswith("plugin 'mine': ")
    assert f"{wrong!r}" in message and f"did you mean {meant!r}?" in message
    assert kernel.pm.get_plugin("mine") is None and "search" not in kernel.tools


def test_a_misspelled_argument_is_an_error_naming_the_plugin_and_the_hook():
    kernel = Kernel(environ={"AOPKIT_PLUGINS": ""})
    with pytest.raises(PluginError, match=r"plugin 'mine'.*'event'.*evnt"):
        kernel.register(WrongArgument(), "mine")


def test_a_name_far_from_every_hook_lists_the_hooks():
    class Odd:
        @hookimpl
        def frobnicate(self):
            pass

    with pytest.raises(PluginError, match=r"'frobnicate'.*the hooks are: escalate, event"):
        Kernel(environ={"AOPKIT_PLUGINS": ""}).register(Odd(), "odd")


@pytest.fixture
def distribution(tmp_path, monkeypatch):
    """``distribution(name, source)``: an installed distribution whose entry point ``name`` is
    a module with ``source``."""
    made = []

    def make(name: str, source: str) -> None:
        module = f"aopkit_clash_{name}"
        dist = tmp_path / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[aopkit]\n{name} = {module}\n")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        made.append(module)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for module in made:
        sys.modules.pop(module, None)


TAKES_OPENAI = """
    import aopkit

    @aopkit.hookimpl
    def register_models(register):
        register("openai", lambda model, kernel, **options: ("imposter", model){replace})
"""


def test_a_third_party_plugin_taking_a_builtin_prefix_is_an_error_naming_both(distribution):
    distribution("imposter", TAKES_OPENAI.format(replace=""))
    with pytest.raises(DuplicateRegistrationError) as info:
        Kernel(environ={})
    message = str(info.value)
    assert "'openai'" in message and "'imposter'" in message
    assert "replace=True" in message and "AOPKIT_DISABLE_PLUGINS" in message
    # blocking one of the two resolves it
    assert Kernel(environ={"AOPKIT_DISABLE_PLUGINS": "imposter"}).models.owners["openai"] == (
        "openai"
    )


def test_an_override_on_purpose_wins_whatever_the_load_order(distribution):
    distribution("imposter", TAKES_OPENAI.format(replace=", replace=True"))
    kernel = Kernel(environ={})
    assert kernel.model("openai:gpt") == ("imposter", "gpt")
    assert kernel.models.owners["openai"] == "imposter"
    assert kernel.models.overridden_by("openai") == ["openai"]
    kernel.unregister("imposter")  # the overridden one comes back
    assert kernel.models.owners["openai"] == "openai"


@attrs.frozen
class Poll(aopkit.Block):
    type = "text"
    question: str = ""


def contribution(hook: str, replace: bool):
    """A plugin contributing one thing to the registry of ``hook`` under a taken name."""
    options = {"replace": True} if replace else {}
    calls = {
        "register_block_types": lambda register: register(Poll, **options),
        "register_models": lambda register: register("scripted", object(), **options),
        "register_formatters": lambda register: register("openai", object(), **options),
        "register_correctors": lambda register: register("fences", object(), **options),
        "register_critics": lambda register: register("self", object(), **options),
        "register_tools": lambda register: register("t", object(), **options),
        "register_commands": lambda register: register("plugins", print, **options),
    }
    plugin = type("Plugin", (), {})()
    impl = calls[hook]
    setattr(plugin, hook, hookimpl(impl))
    return plugin


REGISTRIES = {
    "register_block_types": ("block_types", "text"),
    "register_models": ("models", "scripted"),
    "register_formatters": ("formatters", "openai"),
    "register_correctors": ("correctors", "fences"),
    "register_critics": ("critics", "self"),
    "register_tools": ("tools", "t"),
    "register_commands": ("commands", "plugins"),
}


@pytest.mark.parametrize("hook", sorted(REGISTRIES))
def test_every_registry_refuses_a_clash_and_takes_an_override(hook):
    attribute, name = REGISTRIES[hook]
    kernel = Kernel(environ={})
    registry = getattr(kernel, attribute)
    if name not in registry:  # the tools registry starts empty
        kernel.register(contribution(hook, replace=False), "first")
    owner, before = registry.owners[name], registry[name]
    with pytest.raises(DuplicateRegistrationError, match=f"{name!r}.*{owner!r}"):
        kernel.register(contribution(hook, replace=False), "second")
    assert registry[name] is before
    kernel.register(contribution(hook, replace=True), "override")
    assert registry.owners[name] == "override" and registry[name] is not before
    with pytest.raises(DuplicateRegistrationError):  # two overrides clash
        kernel.register(contribution(hook, replace=True), "another")
    kernel.unregister("override")
    assert registry.owners[name] == owner and registry[name] is before


def test_a_plain_registration_after_an_override_stays_aside():
    kernel = Kernel(environ={"AOPKIT_PLUGINS": ""})
    kernel.register(contribution("register_tools", replace=True), "override")
    kernel.register(contribution("register_tools", replace=False), "plain")
    assert kernel.tools.owners["t"] == "override"
    with pytest.raises(DuplicateRegistrationError, match="'plain'"):
        kernel.register(contribution("register_tools", replace=False), "third")
    kernel.unregister("override")
    assert kernel.tools.owners["t"] == "plain"


def test_an_installed_plugin_with_a_misspelled_hook_is_left_out_and_reported(distribution):
    distribution(
        "typo",
        """
        import aopkit

        @aopkit.hookimpl
        def register_tool(register):
            register("search", object())
        """,
    )
    kernel = Kernel(environ={})
    error = kernel.plugin_errors["typo"]
    assert "did you mean 'register_tools'?" in str(error)
    rows = {row["name"]: row for row in kernel.plugins()}
    assert "register_tool" in rows["typo"]["error"]
    assert "search" not in kernel.tools and kernel.pm.get_plugin("typo") is None
