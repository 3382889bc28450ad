"""Schemas pydantic writes ($defs and $ref, anyOf for Optional, titles, additionalProperties,
discriminated unions, constraints, recursion) reach Gemini in a form its schema parser takes,
for structured output and tool parameters alike, and the answers come back as instances."""

import json
from typing import Annotated, Literal, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aopkit import ModelAgent, Msg, ReActAgent, Toolkit
from aopkit.retry import NO_RETRY
from aopkit.schema import json_schema
from aopkit.testing.fakes.gemini import FakeGemini, _schema_problems, chunk
from aopkit_gemini import to_gemini_schema

KEY = "AIza-TEST-pydantic"


class Card(BaseModel):
    kind: Literal["card"] = "card"
    last4: str = Field(pattern=r"^\d{4}$")


class Transfer(BaseModel):
    kind: Literal["transfer"] = "transfer"
    iban: str = Field(min_length=15, max_length=34)


class Category(BaseModel):
    name: str
    parent: Optional["Category"] = None


class Invoice(BaseModel):
    """An invoice to file."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(gt=0, alias="invoiceNumber")
    total: float = Field(ge=0, multiple_of=0.01)
    payment: Annotated[Union[Card, Transfer], Field(discriminator="kind")]  # noqa: UP007
    category: Category
    lines: list[str] = Field(default_factory=list, max_length=50)
    note: Optional[str] = None  # noqa: UP045


@pytest.fixture
async def gemini(serve):
    fake = FakeGemini(key=KEY)
    fake.base_url = await serve(fake.app())
    return fake


def test_the_sanitised_schema_has_only_what_gemini_reads():
    converted = to_gemini_schema(json_schema(Invoice))
    assert list(_schema_problems(converted, "response_schema")) == []
    properties = converted["properties"]
    assert properties["invoiceNumber"] == {"type": "INTEGER", "minimum": 1}  # gt=0, by alias
    assert properties["total"] == {"type": "NUMBER", "minimum": 0}
    assert properties["lines"] == {"type": "ARRAY", "maxItems": 50, "items": {"type": "STRING"}}
    assert [b["properties"]["kind"]["enum"] for b in properties["payment"]["anyOf"]] == [
        ["card"],
        ["transfer"],
    ]
    assert properties["note"]["nullable"] is True
    parent = properties["category"]["properties"]["parent"]
    assert parent["nullable"] is True and parent["type"] == "OBJECT"  # recursion cut once


async def test_structured_output_and_a_tool_with_pydantic_reach_gemini_and_come_back(
    kernel, gemini
):
    model = kernel.model(
        "gemini:gemini-test", base_url=gemini.base_url, api_key=KEY, retry=NO_RETRY
    )
    answer = (
        '{"invoiceNumber": 7, "total": 12.5, "payment": {"kind": "card", "last4": "4242"}, '
        '"category": {"name": "food", "parent": {"name": "living"}}}'
    )
    gemini.answer_with(chunk({"text": answer}, finish="STOP"))
    invoice = await ModelAgent("clerk", model, kernel=kernel)(
        Msg("user", "file it", "user"), structured=Invoice
    )
    assert invoice.number == 7 and invoice.payment == Card(last4="4242")
    assert invoice.category.parent == Category(name="living")
    sent = gemini.last["generationConfig"]["responseSchema"]
    assert sent["type"] == "OBJECT" and "invoiceNumber" in sent["properties"]

    filed = []

    def file_invoice(invoice: Invoice) -> str:
        """File an invoice."""
        filed.append(invoice)
        return "filed"

    call = {"functionCall": {"name": "file_invoice", "args": {"invoice": json.loads(answer)}}}
    gemini.answer_with(chunk(call, finish="STOP"), chunk({"text": "done"}, finish="STOP"))
    toolkit = Toolkit([file_invoice], kernel=kernel)
    reply = await ReActAgent("clerk", model, toolkit=toolkit, kernel=kernel)(
        Msg("user", "file it", "user")
    )
    assert reply.text == "done" and filed == [invoice]
    declaration = gemini.requests[-2]["tools"][0]["functionDeclarations"][0]
    assert declaration["parameters"]["properties"]["invoice"]["type"] == "OBJECT"
