import sys
import textwrap

import attrs
import pytest

import aopkit
from aopkit import DuplicateRegistrationError, Kernel, LookupFailed, PluginError, hookimpl


def test_standard_block_types_come_through_the_hook(kernel):
    assert set(kernel.block_types) >= {
        "text",
        "thinking",
        "image",
        "audio",
        "video",
        "tool_use",
        "tool_result",
    }
    assert kernel.block_types.owners["text"] == "aopkit"


def test_two_kernels_are_independent():
    class Provider:
        @hookimpl
        def register_models(self, register):
            register("fake", lambda model, kernel, **options: (model, options))

    one, two = Kernel(environ={}), Kernel(environ={})
    one.register(Provider(), "fake-provider")
    assert one.model("fake:m1", temperature=0) == ("m1", {"temperature": 0})
    assert "fake" not in two.models
    with pytest.raises(LookupFailed, match="no model provider named 'fake'"):
        two.model("fake:m1")


def test_model_names_need_a_provider_prefix(kernel):
    with pytest.raises(aopkit.AopkitError, match="provider:model"):
        kernel.model("gpt-4o")


def test_duplicate_registration_names_both_plugins(kernel):
    class First:
        @hookimpl
        def register_tools(self, register):
            register("search", object())

    class Second:
        @hookimpl
        def register_tools(self, register):
            register("calc", object())
            register("search", object())

    kernel.register(First(), "first")
    with pytest.raises(DuplicateRegistrationError) as info:
        kernel.register(Second(), "second")
    message = str(info.value)
    assert "'first'" in message and "'second'" in message and "'search'" in message
    # nothing of the failed plugin stays behind
    assert "calc" not in kernel.tools
    assert kernel.pm.get_plugin("second") is None
    assert kernel.tools.owners["search"] == "first"


def test_a_plugin_whose_registration_raises_is_dropped_whole(kernel):
    class Broken:
        @hookimpl
        def register_tools(self, register):
            register("ok-tool", object())

        @hookimpl
        def register_critics(self, register):
            raise RuntimeError("config file missing")

    with pytest.raises(PluginError, match=r"'broken'.*register_critics raised RuntimeError"):
        kernel.register(Broken(), "broken")
    assert "ok-tool" not in kernel.tools
    assert kernel.pm.get_plugin("broken") is None


def test_a_bad_block_type_is_refused(kernel):
    class NotABlock:
        type = "x"

    class Plugin:
        @hookimpl
        def register_block_types(self, register):
            register(NotABlock)

    with pytest.raises(PluginError, match=r"attrs subclass of aopkit\.Block"):
        kernel.register(Plugin(), "bad-blocks")


def test_block_types_registered_later_are_decoded(kernel):
    @attrs.frozen
    class Rating(aopkit.Block):
        type = "test.rating"
        stars: int

    data = {
        "id": "1",
        "name": "n",
        "role": "user",
        "timestamp": 0.0,
        "metadata": {},
        "content": [{"type": "test.rating", "stars": 4}],
    }
    assert isinstance(kernel.codec.load(data).content[0], aopkit.UnknownBlock)

    class Plugin:
        @hookimpl
        def register_block_types(self, register):
            register(Rating)

    kernel.register(Plugin(), "ratings")
    assert kernel.codec.load(data).content[0] == Rating(4)
    kernel.unregister("ratings")
    assert isinstance(kernel.codec.load(data).content[0], aopkit.UnknownBlock)


def test_hookimpl_with_wrong_arguments_is_a_plugin_error(kernel):
    class Wrong:
        @hookimpl
        def register_models(self, register, nonsense):
            pass

    with pytest.raises(PluginError, match="'wrong'"):
        kernel.register(Wrong(), "wrong")


def test_unknown_hooks_are_reported_when_the_plugin_registers(kernel):
    class Typo:
        @hookimpl
        def register_modles(self, register):
            pass

    with pytest.raises(PluginError, match=r"'typo'.*register_modles.*'register_models'"):
        kernel.register(Typo(), "typo")
    assert kernel.pm.get_plugin("typo") is None
    kernel.check_pending()  # nothing of it stayed


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """A distribution whose entry point names a module that fails to import."""
    dist = tmp_path / "aopkit_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aopkit-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aopkit]\nbroken = aopkit_broken_mod\n")
    (tmp_path / "aopkit_broken_mod.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("aopkit_broken_mod", None)


def test_a_plugin_that_fails_to_import_is_reported_and_the_kernel_starts(broken_distribution):
    kernel = Kernel(environ={})
    assert "broken" in kernel.plugin_errors
    assert "needs libfoo" in str(kernel.plugin_errors["broken"])
    assert "sample" in {row["name"] for row in kernel.plugins()}  # the others still load
    rows = {row["name"]: row for row in kernel.plugins()}
    assert "needs libfoo" in rows["broken"]["error"]


def test_allow_list_from_environment_and_arguments():
    only_builtin = Kernel(environ={"AOPKIT_PLUGINS": ""})
    assert only_builtin.pm.get_plugin("sample") is None
    assert "text" in only_builtin.block_types  # the kernel's own plugin is always there
    assert Kernel(environ={"AOPKIT_PLUGINS": "sample"}).pm.get_plugin("sample") is not None
    assert Kernel(plugins=["sample"], environ={"AOPKIT_PLUGINS": ""}).pm.get_plugin("sample")


def test_block_list_from_environment_and_arguments():
    assert Kernel(environ={"AOPKIT_DISABLE_PLUGINS": "sample"}).pm.get_plugin("sample") is None
    assert Kernel(disable="sample", environ={}).pm.get_plugin("sample") is None
    blocked = Kernel(disable=["sample", "aopkit"], environ={})
    assert "text" in blocked.block_types, "the kernel's own plugin cannot be blocked"


def test_a_blocked_name_cannot_be_registered_by_hand():
    kernel = Kernel(disable=["mine"], environ={})

    class Mine:
        @hookimpl
        def register_tools(self, register):
            register("t", object())

    assert kernel.register(Mine(), "mine") is None
    assert "t" not in kernel.tools


def test_default_kernel_is_created_once():
    assert aopkit.default_kernel() is aopkit.default_kernel()


def test_plugins_listing(kernel):
    rows = {row["name"]: row for row in kernel.plugins()}
    sample = rows["sample"]
    assert sample["distribution"] == "aopkit-sample-plugin"
    assert sample["version"] == "1.2.3"
    assert sample["hooks"] == ["register_block_types", "register_commands"]
    assert sample["registered"] == {"block_types": ["sample.poll"], "commands": ["sample-hello"]}


def test_importing_aopkit_adds_no_log_sink():
    import subprocess

    code = textwrap.dedent("""
        from loguru import logger
        before = len(logger._core.handlers)
        import aopkit
        aopkit.Kernel()
        assert len(logger._core.handlers) == before, "aopkit added a loguru sink"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
