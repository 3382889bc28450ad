"""A pydantic model as structured output through the OpenAI provider: the schema it sends (the
payload checked against the official types by the fake server) and the instance it returns,
natively and through the forced tool, whose schema must be an object at the root even when the
model refers to itself."""

from typing import Optional

import attrs
import pytest
from pydantic import BaseModel, Field

from aopkit import ModelAgent, Msg
from aopkit.retry import NO_RETRY
from aopkit.schema import json_schema
from aopkit.testing.fakes.openai import FakeOpenAI, call, completion
from aopkit_openai import ANSWER_TOOL, OpenAIModel

KEY = "sk-proj-FAKE-KEY-pydantic"
ASK = Msg("user", "Sort these.", "user")
ANSWER = '{"name": "all", "weight": 1, "next": {"name": "rest", "weight": 2}}'


class Step(BaseModel):
    name: str
    weight: int = Field(ge=0)
    next: Optional["Step"] = None


@pytest.fixture
async def fake(serve):
    server = FakeOpenAI(key=KEY)
    await server.start(serve)
    return server


def agent(kernel, fake, **options):
    model = kernel.model(
        "openai:gpt-test", base_url=fake.base_url, api_key=KEY, retry=NO_RETRY, **options
    )
    return ModelAgent("sorter", model, kernel=kernel)


async def test_native_structured_output_sends_the_rooted_schema(kernel, fake):
    fake.then(completion(ANSWER))
    step = await agent(kernel, fake)(ASK, structured=Step)
    assert step == Step(name="all", weight=1, next=Step(name="rest", weight=2))
    schema = fake.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema == json_schema(Step)
    assert schema["type"] == "object" and "$ref" not in schema and "Step" in schema["$defs"]


async def test_the_forced_tool_takes_a_recursive_model_and_its_answer(kernel, fake):
    capabilities = attrs.evolve(OpenAIModel.capabilities, structured_output=False)
    fake.then(completion(tool_calls=[call("call_1", ANSWER_TOOL, ANSWER)]))
    step = await agent(kernel, fake, capabilities=capabilities)(ASK, structured=Step)
    assert step.next == Step(name="rest", weight=2)
    parameters = fake.requests[0]["tools"][-1]["function"]["parameters"]
    assert parameters["type"] == "object"
