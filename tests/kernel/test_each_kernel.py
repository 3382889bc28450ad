"""How ``aopkit run`` reaches a program's kernels: ``each_kernel`` and ``model_wrappers``."""

from __future__ import annotations

import pytest

import aopkit
from aopkit import kernel as kernel_module
from aopkit.kernel import each_kernel
from aopkit.retry import RetryPolicy


def test_each_kernel_sets_up_the_default_and_every_new_kernel_only_inside_the_block(
    monkeypatch,
):
    default = aopkit.Kernel(load_entrypoints=False)
    monkeypatch.setattr(kernel_module, "_default", default)
    seen: list[aopkit.Kernel] = []
    with each_kernel(seen.append):
        assert seen == [default]
        made = aopkit.Kernel(load_entrypoints=False)
        assert seen == [default, made]
    aopkit.Kernel(load_entrypoints=False)
    assert seen == [default, made]


def test_each_kernel_is_undone_when_the_block_fails(monkeypatch):
    monkeypatch.setattr(kernel_module, "_default", None)
    seen: list[aopkit.Kernel] = []
    with pytest.raises(RuntimeError), each_kernel(seen.append):
        raise RuntimeError("the program failed")
    aopkit.Kernel(load_entrypoints=False)
    assert seen == [] and kernel_module._setups == []


async def test_model_wrappers_wrap_in_order_and_the_policies_reach_the_outermost(kernel):
    calls = []

    def outer_of(label):
        def wrap(name, build):
            calls.append((label, name))
            inner = build()
            return ("wrapped", label, inner)

        return wrap

    kernel.model_wrappers.append(outer_of("first"))
    model = kernel.model("scripted:x")
    assert model[:2] == ("wrapped", "first") and model[2].name == "scripted:x"

    kernel.model_wrappers[:] = [lambda name, build: build()]
    retry = RetryPolicy(attempts=1)
    assert kernel.model("scripted:x", retry=retry).retry is retry
    kernel.model_wrappers[:] = [outer_of("a"), outer_of("b")]
    calls.clear()
    nested = kernel.model("scripted:y")
    assert calls == [("b", "scripted:y"), ("a", "scripted:y")], "the last added is outermost"
    assert nested[1] == "b" and nested[2][1] == "a"


def test_every_run_part_finishes_even_when_another_fails(kernel):
    from aopkit.cli import build_parser, run_options

    finished = []

    class Part:
        def __init__(self, name):
            self.name = name

        def attach(self, kernel):
            pass

        def finish(self):
            finished.append(self.name)
            if self.name == "broken":
                raise OSError("disk full")

    class Plugin:
        @aopkit.hookimpl
        def register_run_options(self, register):
            for name in ("first", "broken", "last"):
                register(name, lambda parser: None, lambda args, name=name: Part(name))

    kernel.register(Plugin(), "parts")
    args = build_parser(kernel).parse_args(["run", "program.py"])  # no flags given
    with pytest.raises(OSError, match="disk full"), run_options(args, kernel):
        pass
    assert finished == ["last", "broken", "first"]
    assert kernel_module._setups == []


def test_a_command_run_in_the_default_kernel_is_wired_once(kernel, monkeypatch, tmp_path):
    """``main(argv, kernel=aopkit.default_kernel())``: the kernel given is also the default
    one each_kernel wires; wired twice, its trace would be registered twice (an error) and
    its usage reported twice."""
    from aopkit.cli import build_parser, run_options
    from aopkit.run_options import _Usage

    monkeypatch.setattr(kernel_module, "_default", kernel)
    trace = tmp_path / "t.jsonl"
    args = build_parser(kernel).parse_args(["chat", "--trace", str(trace), "--usage", "scripted:x"])
    with run_options(args, kernel, kernel) as parts:
        pass
    usage = [part for part in parts if isinstance(part, _Usage)]
    assert [len(part.kernels) for part in usage] == [1]
