"""Recording the same session twice writes the same bytes: nothing that differs from run to run
(the seconds a call took, made-up tool-call ids, the provider's response ids, a Retry-After
given as a date) reaches the cassette, and the recording replays."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import aopkit
from aopkit.retry import RetryPolicy
from aopkit.testing.fakes.ollama import Answer, FakeOllama, call
from aopkit.testing.fakes.openai import Failure, FakeOpenAI, completion

QUICK = RetryPolicy(attempts=3, initial=0, jitter=0)


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers."""
    return a * b


class RetryAtDate(Mapping):
    """A ``Retry-After`` header as a date one second from when it is sent, as servers write it
    (whole seconds): the wait it means depends on the clock of the run."""

    def __getitem__(self, name):
        if name != "Retry-After":
            raise KeyError(name)
        if time.time() % 1 > 0.8:  # the client reads it milliseconds later: not across a second
            time.sleep(0.25)
        return email.utils.formatdate(time.time() + 1, usegmt=True)

    def __iter__(self):
        return iter(["Retry-After"])

    def __len__(self):
        return 1


def servers():
    ollama = FakeOllama(
        Answer(calls=(call("multiply", {"a": 6, "b": 7}),)),  # Ollama sends no call id
        Answer("6 times 7 is 42."),
    )
    openai = FakeOpenAI(
        Failure(503, "overloaded", "server_error", headers=RetryAtDate()),
        completion("Agreed: 42."),  # its id differs on every call of the fake, as on a real API
    )
    return ollama, openai


async def session(cassette, mode, ollama_url=None, openai_url=None):
    """Two agents, one with a tool (streamed), one that meets a 503 first; their last words."""
    async with aopkit.Kernel(environ={}) as kernel:
        options = {"cassette": cassette, "mode": mode, "retry": QUICK}
        solver = aopkit.ReActAgent(
            "solver",
            kernel.model("replay:ollama:llama3.2", base_url=ollama_url, **options),
            tools=[multiply],
            stream=True,
        )
        checker = aopkit.ModelAgent(
            "checker", kernel.model("replay:openai:gpt-4o-mini", base_url=openai_url, **options)
        )
        async with aopkit.MsgHub([solver, checker], announcement="What is 6 times 7?"):
            return (await solver()).text, (await checker()).text


async def record(tmp_path, name, serve):
    ollama, openai = servers()
    urls = await ollama.start(serve), await openai.start(serve)
    path = tmp_path / name
    result = await session(path, "record", *urls)
    return path, result


async def test_recording_a_session_twice_gives_the_same_bytes(tmp_path, serve):
    first, said = await record(tmp_path, "first.json", serve)
    second, again = await record(tmp_path, "second.json", serve)
    assert said == again == ("6 times 7 is 42.", "Agreed: 42.")
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert '"seconds"' not in text and "chatcmpl-" not in text
    assert '"retry_after": 1.0' in text


async def test_the_steady_recording_replays_without_the_servers(tmp_path, serve):
    path, said = await record(tmp_path, "session.json", serve)
    assert await session(path, "replay") == said
