"""One test per hook spec (named ``test_hook_<name>``), and the checks that keep it so."""

import asyncio
import inspect
import re
from pathlib import Path

import pytest

import aopkit
from aopkit import Agent, Msg, hookimpl, hookspecs
from aopkit.events import Event, ReplyFinished, ReplyStarted

DOCS = Path(__file__).parents[2] / "docs" / "hooks.md"
HOOKS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, "aopkit_spec")
)


def test_every_hook_has_a_docstring_a_docs_entry_and_a_test():
    documented = set(re.findall(r"^### `?(\w+)", DOCS.read_text(), flags=re.M))
    tested = {
        name.removeprefix("test_hook_") for name in globals() if name.startswith("test_hook_")
    }
    for hook in HOOKS:
        assert inspect.getdoc(getattr(hookspecs, hook)), f"hook {hook} has no docstring"
        assert hook in documented, f"hook {hook} has no '### {hook}' entry in docs/hooks.md"
        assert hook in tested, f"hook {hook} has no test_hook_{hook} test"
    assert documented <= set(HOOKS), (
        f"docs/hooks.md documents unknown hooks: {documented - set(HOOKS)}"
    )


def test_the_hook_check_sees_every_hook_the_kernel_has_and_no_stale_test():
    """The check above loops over HOOKS: it proves nothing if HOOKS missed a spec the kernel
    has (or were empty), or if a test_hook_ test outlived its hook."""
    pm = aopkit.Kernel(load_entrypoints=False).pm
    specs = {name for name, caller in vars(pm.hook).items() if caller.has_spec()}
    assert HOOKS and set(HOOKS) == specs
    tested = {
        name.removeprefix("test_hook_") for name in globals() if name.startswith("test_hook_")
    }
    assert tested <= specs, f"tests of unknown hooks: {tested - specs}"


def _plugin(hook_name, body):
    return type("Plugin", (), {hook_name: hookimpl(body)})()


def test_hook_register_block_types(kernel):
    import attrs

    @attrs.frozen
    class Vote(aopkit.Block):
        type = "test.vote"
        choice: str

    kernel.register(_plugin("register_block_types", lambda self, register: register(Vote)), "votes")
    msg = Msg("a", [Vote("yes")], "user")
    assert kernel.codec.loads(kernel.codec.dumps(msg)) == msg


def test_hook_register_models(kernel):
    made = []

    def factory(model, kernel, **options):
        made.append((model, options))
        return f"model {model}"

    kernel.register(
        _plugin("register_models", lambda self, register: register("toy", factory)), "toy"
    )
    assert kernel.model("toy:tiny-1", base_url="http://127.0.0.1:1") == "model tiny-1"
    assert made == [("tiny-1", {"base_url": "http://127.0.0.1:1"})]


def _named_registration(kernel, hook, registry):
    thing = object()
    kernel.register(_plugin(hook, lambda self, register: register("thing", thing)), "p")
    assert getattr(kernel, registry)["thing"] is thing
    assert getattr(kernel, registry).owners["thing"] == "p"


def test_hook_register_formatters(kernel):
    _named_registration(kernel, "register_formatters", "formatters")


def test_hook_register_correctors(kernel):
    _named_registration(kernel, "register_correctors", "correctors")


def test_hook_register_critics(kernel):
    _named_registration(kernel, "register_critics", "critics")


def test_hook_register_compactors(kernel):
    _named_registration(kernel, "register_compactors", "compactors")


def test_hook_register_tools(kernel):
    _named_registration(kernel, "register_tools", "tools")


def test_hook_register_commands(kernel, capsys):
    from aopkit.cli import main

    def shout(args, kernel):
        """Shout a word."""
        print(args.word.upper())
        return 3

    def register_commands(self, register):
        register("shout", shout, arguments=lambda parser: parser.add_argument("word"))

    kernel.register(_plugin("register_commands", register_commands), "shouter")
    assert kernel.commands["shout"].help == "Shout a word."
    assert main(["shout", "hey"], kernel=kernel) == 3
    assert capsys.readouterr().out == "HEY\n"
    assert main(["--fault-report", "shout", "hey"], kernel=kernel) == 3
    assert capsys.readouterr().out == "HEY\nFault report: no faults.\n"


def test_hook_register_prices(kernel):
    from aopkit import Price
    from aopkit.errors import AopkitError, PluginError

    def register_prices(self, register):
        register("scripted:priced", Price(input=1.0, output=2.0))
        register("scripted:mapped", {"input": 3, "output": 4, "cached_input": 0.5})

    kernel.register(_plugin("register_prices", register_prices), "pricer")
    assert kernel.prices["scripted:mapped"] == Price(3, 4, cached_input=0.5)
    (row,) = [row for row in kernel.plugins() if row["name"] == "pricer"]
    assert row["registered"] == {"prices": ["scripted:priced", "scripted:mapped"]}
    kernel.prices["scripted:priced"] = Price(input=5.0, output=5.0)  # the program's wins
    assert kernel.prices["scripted:priced"].input == 5.0
    del kernel.prices["scripted:priced"]
    assert kernel.prices["scripted:priced"].input == 1.0
    kernel.unregister("pricer")
    assert "scripted:mapped" not in kernel.prices

    def bad(self, register):
        register("scripted:x", {"input": -1, "output": 1})

    try:
        kernel.register(_plugin("register_prices", bad), "bad-pricer")
    except PluginError as exc:
        assert "negative" in str(exc) and "bad-pricer" in str(exc)
    else:
        raise AssertionError("a negative price was accepted")
    assert "scripted:x" not in kernel.prices
    assert isinstance(PluginError("p", "x"), AopkitError)


async def test_hook_register_runtimes(kernel):
    """A plugin's runtime makes the pools ``aopkit.pools(runtime=...)`` returns and the proxy
    ``agent.to_dist(runtime=...)`` returns; unregistered, it is a clear error again."""
    from aopkit.errors import AopkitError, PluginError

    made = []

    class Inline:
        def pools(self, agents, size, **options):
            made.append((len(agents), size, options))
            return [aopkit.AgentPool(agents, kernel=options["kernel"], name="inline")]

        def to_dist(self, agent, **options):
            return Echo(f"remote-{agent.name}", kernel=agent.kernel)

    class Echo(Agent):
        async def reply(self, msg):
            return Msg(self.name, msg.text, "assistant")

    def register_runtimes(self, register):
        register("inline", Inline())

    kernel.register(_plugin("register_runtimes", register_runtimes), "inliner")
    assert "local" in kernel.runtimes and kernel.runtimes.names_of("inliner") == ["inline"]
    agents = [Echo(f"e{i}", kernel=kernel) for i in range(3)]
    (pool,) = aopkit.pools(agents, 2, runtime="inline", kernel=kernel)
    assert made == [(3, 2, {"kernel": kernel})] and pool.name == "inline"
    assert [m.text for m in await pool.reply_all("hi")] == ["hi"] * 3
    assert agents[0].to_dist(runtime="inline").name == "remote-e0"
    kernel.unregister("inliner")
    with pytest.raises(AopkitError, match=r"no runtime named 'inline'.*known: local"):
        aopkit.pools(agents, 2, runtime="inline")
    with pytest.raises(AopkitError, match="cannot run one agent remotely"):
        agents[0].to_dist(runtime="local")

    def not_a_runtime(self, register):
        register("broken", object())

    with pytest.raises(PluginError, match="pools"):
        kernel.register(_plugin("register_runtimes", not_a_runtime), "broken")
    assert "broken" not in kernel.runtimes


def test_hook_register_run_options(kernel, capsys, monkeypatch):
    """A plugin's run option: its flag reaches ``aopkit run``, the run's kernels are attached as
    they are created, and the part finishes when the run ends, even when the program fails."""
    import types

    from aopkit.cli import main

    attached: list[aopkit.Kernel] = []
    finished: list[str] = []

    class Stamp:
        def __init__(self, label):
            self.label = label

        def attach(self, kernel):
            attached.append(kernel)

        def finish(self):
            finished.append(self.label)

    def register_run_options(self, register):
        register(
            "stamp",
            lambda parser: parser.add_argument("--stamp", metavar="LABEL"),
            lambda args: Stamp(args.stamp) if args.stamp else None,
        )

    kernel.register(_plugin("register_run_options", register_run_options), "stamper")
    assert kernel.run_options.names_of("stamper") == ["stamp"]
    monkeypatch.setattr(aopkit.kernel, "_default", None)  # else it is attached too
    made: list[aopkit.Kernel] = []

    def two_kernels():
        made.extend([aopkit.Kernel(load_entrypoints=False) for _ in range(2)])

    def failing():
        made.append(aopkit.Kernel(load_entrypoints=False))
        raise RuntimeError("the program's bug")

    program = types.ModuleType("stamp_program")
    program.two_kernels, program.failing = two_kernels, failing  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "stamp_program", program)

    assert main(["run", "--stamp", "blue", "stamp_program:two_kernels"], kernel=kernel) == 0
    assert attached == made and finished == ["blue"], "every kernel of the run, then finish"
    assert main(["run", "stamp_program:two_kernels"], kernel=kernel) == 0
    assert finished == ["blue"] and len(attached) == 2, "no flag: the part never starts"
    assert main(["run", "--stamp", "red", "stamp_program:failing"], kernel=kernel) == 1
    assert finished == ["blue", "red"] and attached[-1] is made[-1]
    assert "RuntimeError: the program's bug" in capsys.readouterr().err
    aopkit.Kernel(load_entrypoints=False)
    assert len(attached) == 3, "kernels made after the run are left alone"


def test_hook_event(kernel):
    seen: list[Event] = []

    class Echo(Agent):
        async def reply(self, msg):
            return Msg(self.name, msg.text, "assistant")

    assert not kernel.observed
    kernel.register(_plugin("event", lambda self, event: seen.append(event)), "watcher")
    assert kernel.observed
    reply = asyncio.run(Echo("echo", kernel=kernel)(Msg("u", "hi", "user")))
    kinds = [type(e) for e in seen]
    assert kinds[0] is ReplyStarted and kinds[-1] is ReplyFinished
    assert seen[-1].msg_id == reply.id
    kernel.unregister("watcher")
    assert not kernel.observed


def test_hook_escalate(kernel):
    asked = []

    class Human:
        @hookimpl
        async def escalate(self, incident, kernel):
            asked.append("human")
            return f"answer to {incident}"

    class Declines:
        @hookimpl
        async def escalate(self, incident):
            asked.append("declines")
            return None  # not mine: the next implementation is asked

    assert asyncio.run(kernel.escalate("incident-1")) is None  # nobody to ask
    kernel.register(Human(), "human")
    kernel.register(Declines(), "declines")
    assert asyncio.run(kernel.escalate("incident-1")) == "answer to incident-1"
    assert asked == ["declines", "human"]  # the last registered is asked first
