"""One schema path for attrs classes, dataclasses, TypedDicts and pydantic v2 models: the schema
a model is shown, the strict check of what it sends back, tool parameters and tool results."""

import dataclasses
import enum
import json
import os
import subprocess
import sys
import textwrap
from typing import Annotated, Literal, Optional, TypedDict, Union

import attrs
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aopkit import ModelAgent, Msg, ReActAgent, Toolkit, ToolUseBlock
from aopkit.codec import Codec
from aopkit.errors import DecodeError
from aopkit.faults import FaultPolicy, Unresolved
from aopkit.schema import SchemaError, Schemas, json_schema
from aopkit.structured import NotJSON, Target
from aopkit.toolkit import Tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    """Where someone lives."""

    city: str = Field(min_length=1)
    zip_code: str = Field(alias="zipCode", pattern=r"^\d{5}$")


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    age: int = Field(ge=0, le=150)
    home: Optional[Address] = None  # noqa: UP045 - Optional spelled out on purpose
    favourite: Color = Color.BLUE
    tags: list[str] = []

    @field_validator("name")
    @classmethod
    def capitalised(cls, value: str) -> str:
        if not value[:1].isupper():
            raise ValueError("must start with a capital letter")
        return value


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Owner(BaseModel):
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]  # noqa: UP007


class Tree(BaseModel):
    value: int
    children: list["Tree"] = []


class Range(BaseModel):
    low: int
    high: int

    @model_validator(mode="after")
    def ordered(self) -> "Range":
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


@dataclasses.dataclass(frozen=True)
class Item:
    """A line of an order."""

    sku: str
    quantity: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)
    colour: Color = dataclasses.field(default=Color.RED, metadata={"description": "its colour"})


@attrs.frozen
class Order:
    items: list[Item]
    buyer: Person  # a pydantic model inside an attrs class


@attrs.frozen
class Folder:
    name: str
    subfolders: list["Folder"] = attrs.field(factory=list)


class Movie(TypedDict):
    title: str
    year: int


# -- schemas -----------------------------------------------------------------------------------


def test_a_dataclass_is_described_like_an_attrs_class():
    schema = json_schema(Item)
    assert schema == {
        "type": "object",
        "title": "Item",
        "description": "A line of an order.",
        "properties": {
            "sku": {"type": "string"},
            "quantity": {"type": "integer", "default": 1},
            "notes": {"type": "array", "items": {"type": "string"}},
            "colour": {
                "type": "string",
                "enum": ["red", "blue"],
                "default": "red",
                "description": "its colour",
            },
        },
        "required": ["sku"],
        "additionalProperties": False,
    }


def test_a_typeddict_is_described():
    assert json_schema(Movie) == {
        "type": "object",
        "title": "Movie",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title", "year"],
        "additionalProperties": False,
    }


def test_a_pydantic_model_is_described_by_pydantic_with_its_definitions_at_the_root():
    schema = json_schema(Person)
    assert schema["properties"]["age"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 150,
        "title": "Age",
    }
    assert schema["additionalProperties"] is False  # extra="forbid"
    home = schema["properties"]["home"]["anyOf"][0]
    assert home == {"$ref": "#/$defs/Address"}
    address = schema["$defs"]["Address"]
    assert set(address["properties"]) == {"city", "zipCode"}  # the alias is what is sent
    assert schema["$defs"]["Color"]["enum"] == ["red", "blue"]


def test_recursive_classes_refer_to_their_definition_and_the_root_stays_an_object():
    for cls in (Folder, Tree):
        schema = json_schema(cls)
        assert schema["type"] == "object" and "$ref" not in schema
        name = cls.__name__
        items = schema["properties"]["subfolders" if cls is Folder else "children"]["items"]
        assert items == {"$ref": f"#/$defs/{name}"}
        assert schema["$defs"][name]["properties"].keys() == schema["properties"].keys()


def test_classes_of_one_name_from_two_places_keep_their_own_definitions():
    def holder(name, field):
        inner = pydantic.create_model("Inner", **{field: (int, ...)})
        return pydantic.create_model(name, inner=(inner, ...), again=(inner, ...))

    @attrs.frozen
    class Both:
        one: holder("One", "a")  # type: ignore[valid-type]
        two: holder("Two", "b")  # type: ignore[valid-type]

    schema = json_schema(Both)
    props = schema["properties"]
    one, two = props["one"]["properties"]["inner"]["$ref"], props["two"]["properties"]["inner"]
    assert props["one"]["properties"]["again"]["$ref"] == one
    assert two == props["two"]["properties"]["again"] and two["$ref"] != one
    defs = schema["$defs"]
    assert set(defs[one.rsplit("/", 1)[1]]["properties"]) == {"a"}
    assert set(defs[two["$ref"].rsplit("/", 1)[1]]["properties"]) == {"b"}


def test_pydantic_inside_attrs_and_dataclasses_inside_pydantic_share_one_defs():
    schema = json_schema(Order)
    assert schema["properties"]["buyer"]["title"] == "Person"  # inlined, as attrs classes are
    assert schema["properties"]["buyer"]["properties"]["home"]["anyOf"][0] == {
        "$ref": "#/$defs/Address"
    }
    assert set(schema["$defs"]) == {"Address", "Color"}
    assert schema["properties"]["items"]["items"]["title"] == "Item"


def test_what_cannot_be_described_is_a_clear_error():
    from pydantic import v1

    class Old(v1.BaseModel):
        x: int

    with pytest.raises(SchemaError, match=r"pydantic v1 model .* derive it from pydantic"):
        json_schema(Old)

    class Opaque(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        call: object = None
        run: type = int

    with pytest.raises(SchemaError, match="pydantic cannot describe"):
        json_schema(Opaque)

    @dataclasses.dataclass
    class Bad:
        when: complex

    with pytest.raises(SchemaError, match=r"Bad\.when: cannot describe"):
        json_schema(Bad)


# -- checking what a model sends ---------------------------------------------------------------


async def test_pydantic_output_is_checked_strictly_with_the_locations_translated(kernel):
    target = Target.of(Person, kernel)
    ok = target.parse('{"name": "Ada", "age": 36, "home": {"city": "L", "zipCode": "12345"}}')
    assert ok == Person(name="Ada", age=36, home=Address(city="L", zipCode="12345"))

    cases = [
        ('{"name": "Ada", "age": "36"}', "age", "Input should be a valid integer"),
        ('{"name": "Ada", "age": 200}', "age", "less than or equal to 150"),
        ('{"name": "ada", "age": 3}', "name", "must start with a capital letter"),
        ('{"name": "Ada", "age": 3, "spy": 1}', "spy", "Extra inputs are not permitted"),
        ('{"name": "Ada", "age": 3, "tags": ["a", 2]}', "tags[1]", "valid string"),
        ('{"name": "Ada", "age": 3, "favourite": "green"}', "favourite", "'red' or 'blue'"),
        ('{"name": "Ada", "age": 3, "home": {"city": "L", "zip_code": "12345"}}',
         "home.zipCode", "Field required"),
        ("[1, 2]", "", "Input should be an object"),
    ]  # fmt: skip
    for text, path, problem in cases:
        with pytest.raises(DecodeError) as info:
            target.parse(text)
        assert (info.value.path, problem in info.value.problem) == (path, True), text


async def test_every_pydantic_problem_is_named_up_to_a_few(kernel):
    with pytest.raises(DecodeError) as info:
        Target.of(Person, kernel).parse('{"name": 1, "age": "x", "tags": [1, 2, 3, 4, 5]}')
    assert info.value.path == "name"
    assert "(other problems in the same Person: age: " in info.value.problem
    assert "tags[0]" in info.value.problem and "; and 3 more)" in info.value.problem


async def test_other_problems_are_named_from_the_model_that_has_them(kernel):
    with pytest.raises(DecodeError) as info:
        Target.of(Order, kernel).parse('{"items": [], "buyer": {"name": "bo", "age": -1}}')
    assert info.value.path == "buyer.name"
    assert "(other problems in the same Person: age: Input should be greater" in str(info.value)


async def test_model_validators_and_discriminated_unions(kernel):
    with pytest.raises(DecodeError, match="<root>: Value error, low must not exceed high"):
        Target.of(Range, kernel).parse('{"low": 3, "high": 1}')
    owner = Target.of(Owner, kernel).parse('{"pet": {"kind": "dog", "good": true}}')
    assert owner.pet == Dog(good=True)
    with pytest.raises(DecodeError) as info:
        Target.of(Owner, kernel).parse('{"pet": {"kind": "dog", "good": "very"}}')
    assert info.value.path == "pet.dog.good"  # pydantic names the union member it tried


async def test_dataclasses_typeddicts_and_mixed_classes_load_strictly(kernel):
    assert Target.of(Item, kernel).parse('{"sku": "a", "colour": "blue"}') == Item(
        "a", colour=Color.BLUE
    )
    with pytest.raises(DecodeError, match=r"quantity: expected an integer"):
        Target.of(Item, kernel).parse('{"sku": "a", "quantity": "2"}')
    with pytest.raises(DecodeError, match=r"unexpected field\(s\): price"):
        Target.of(Item, kernel).parse('{"sku": "a", "price": 2}')
    assert Target.of(Movie, kernel).parse('{"title": "M", "year": 1927}') == {
        "title": "M",
        "year": 1927,
    }
    with pytest.raises(DecodeError, match="year"):
        Target.of(Movie, kernel).parse('{"title": "M", "year": "1927"}')
    order = Target.of(Order, kernel).parse(
        '{"items": [{"sku": "x"}], "buyer": {"name": "Bo", "age": 9}}'
    )
    assert order.buyer == Person(name="Bo", age=9) and order.items == [Item("x")]
    with pytest.raises(DecodeError) as info:
        Target.of(Order, kernel).parse('{"items": [], "buyer": {"name": "Bo", "age": -1}}')
    assert info.value.path == "buyer.age"


async def test_recursive_and_very_deep_values(kernel):
    def nested(depth):
        return '{"value": 1, "children": [' * depth + '{"value": 0}' + "]}" * depth

    tree = Target.of(Tree, kernel).parse(nested(40))
    for _ in range(40):
        tree = tree.children[0]
    assert tree == Tree(value=0)
    with pytest.raises((NotJSON, DecodeError), match="nest"):
        Target.of(Tree, kernel).parse(nested(5000))
    with pytest.raises(DecodeError) as info:
        Target.of(Tree, kernel).parse(nested(3).replace('{"value": 0}', '{"value": "0"}'))
    assert info.value.path == "children[0].children[0].children[0].value"


@pytest.mark.parametrize(
    "garbage",
    ["", "null", '"Person"', "Ada, 36", '{"name": "Ada", "age": 3', "\x00\x01", "<html></html>"],
)
async def test_garbage_output_is_an_error_of_ours(kernel, garbage):
    with pytest.raises((NotJSON, DecodeError)):
        Target.of(Person, kernel).parse(garbage)


# -- structured output through the fault tiers -------------------------------------------------


async def test_structured_pydantic_goes_through_the_tiers_like_attrs(kernel):
    model = kernel.model(
        "scripted:judge",
        responses=[
            '```json\n{"name": "Ada", "age": "36", "home": {"city": "L", "zipCode": 12345}}\n```'
        ],
    )
    agent = ModelAgent("judge", model, kernel=kernel)
    person = await agent(Msg("user", "Who?", "user"), structured=Person)
    assert person == Person(name="Ada", age=36, home=Address(city="L", zipCode="12345"))
    assert model.calls[0]["structured"] == json_schema(Person)
    assert [f.tier for f in kernel.faults.faults] == [2]  # fences, then coerce (through $ref)


async def test_a_validator_that_refuses_reaches_the_critic_with_where_and_what(kernel):
    model = kernel.model(
        "scripted:judge",
        responses=['{"name": "ada", "age": 3}', '{"name": "Ada", "age": 3}'],
    )
    agent = ModelAgent("judge", model, kernel=kernel)
    assert await agent(Msg("user", "Who?", "user"), structured=Person) == Person(name="Ada", age=3)
    feedback = model.calls[1]["messages"][-1].text
    assert "name: Value error, must start with a capital letter" in feedback
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver) == (3, "self")


async def test_structured_dataclass_that_never_complies_is_unresolved(kernel):
    model = kernel.model("scripted:judge", responses=['{"sku": ["a"]}'] * 5)
    agent = ModelAgent("judge", model, kernel=kernel, faults=FaultPolicy(critics=("self",)))
    with pytest.raises(Exception) as info:
        await agent(Msg("user", "Which?", "user"), structured=Item)
    assert isinstance(info.value.__cause__, Unresolved)
    assert "sku: expected a string" in str(info.value.__cause__)


# -- tools -------------------------------------------------------------------------------------


def book(order: Order, owner: Owner, note: Optional[Item] = None) -> Person:  # noqa: UP045
    """Book an order.

    Args:
        order: what to book
        owner: who pays
    """
    assert isinstance(order, Order) and isinstance(owner.pet, (Cat, Dog))
    assert note is None or isinstance(note, Item)
    return Person(name=order.buyer.name, age=order.buyer.age + 1, home=None)


def test_tool_parameters_share_one_defs_and_keep_their_docs():
    parameters = Tool(book).parameters
    assert parameters["required"] == ["order", "owner"]
    owner = parameters["properties"]["owner"]
    assert owner["title"] == "Owner" and owner["description"] == "who pays"
    assert owner["properties"]["pet"]["oneOf"] == [
        {"$ref": "#/$defs/Cat"},
        {"$ref": "#/$defs/Dog"},
    ]
    assert set(parameters["$defs"]) == {"Address", "Color", "Cat", "Dog"}
    assert parameters["properties"]["note"]["anyOf"][0]["title"] == "Item"


async def test_a_tool_receives_instances_and_its_result_is_json_for_the_model(kernel):
    toolkit = Toolkit([book], kernel=kernel)
    arguments = {
        "order": {"items": [{"sku": "x"}], "buyer": {"name": "Bo", "age": 9}},
        "owner": {"pet": {"kind": "cat", "lives": 9}},
        "note": {"sku": "n"},
    }
    result = await toolkit.call(ToolUseBlock("c1", "book", arguments))
    assert not result.is_error
    assert json.loads(result.output) == {
        "name": "Bo",
        "age": 10,
        "home": None,
        "favourite": "blue",
        "tags": [],
    }
    arguments["owner"] = {"pet": {"kind": "cow"}}
    result = await toolkit.call(ToolUseBlock("c2", "book", arguments))
    assert result.is_error and "invalid arguments: owner.pet:" in result.output
    assert "'cat', 'dog'" in result.output


async def test_tool_results_of_every_kind_of_class_are_json_under_their_schema_names(kernel):
    def results() -> list:
        return [
            Address(city="L", zipCode="12345"),
            Item("a"),
            Folder("f"),
            {"nested": [Tree(value=1)]},
        ]

    result = await Toolkit([results], kernel=kernel).call(ToolUseBlock("c1", "results", {}))
    assert json.loads(result.output) == [
        {"city": "L", "zipCode": "12345"},  # the alias, as the schema shows it
        {"sku": "a", "quantity": 1, "notes": [], "colour": "red"},
        {"name": "f", "subfolders": []},
        {"nested": [{"value": 1, "children": []}]},
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(42, "42"), (2.5, "2.5"), (True, "true"), (float("inf"), "Infinity"), (None, "")],
)
async def test_a_number_a_tool_returns_is_read_as_json_writes_it(kernel, value, text):
    def number() -> object:
        return value

    result = await Toolkit([number], kernel=kernel).call(ToolUseBlock("c1", "number", {}))
    assert not result.is_error and result.output == text


async def test_a_react_agent_calls_a_pydantic_tool_and_a_bad_call_is_repaired(kernel):
    seen = []

    def move(to: Address) -> str:
        """Move house."""
        seen.append(to)
        return f"moved to {to.city}"

    model = kernel.model(
        "scripted:planner",
        responses=[
            [ToolUseBlock("t1", "move", {"to": {"city": "Oslo", "zipCode": 1234}})],
            [ToolUseBlock("t2", "move", {"to": {"city": "Oslo", "zipCode": "01234"}})],
            "done",
        ],
    )
    agent = ReActAgent("planner", model, toolkit=Toolkit([move], kernel=kernel), kernel=kernel)
    reply = await agent(Msg("user", "move me", "user"))
    assert reply.text == "done"
    assert seen == [Address(city="Oslo", zipCode="01234")]
    sent = model.calls[0]["tools"][0].parameters
    assert sent["properties"]["to"]["properties"]["zipCode"]["pattern"] == r"^\d{5}$"


# -- pydantic stays optional -------------------------------------------------------------------


def test_import_aopkit_and_its_attrs_paths_never_import_pydantic():
    code = textwrap.dedent(
        """
        import asyncio, dataclasses, sys
        import attrs
        import aopkit
        from aopkit.schema import json_schema
        from aopkit.structured import Target

        @attrs.frozen
        class A:
            x: int

        @dataclasses.dataclass
        class D:
            a: A

        async def main():
            kernel = aopkit.Kernel()
            assert Target.of(D, kernel).parse('{"a": {"x": 1}}') == D(A(1))
            toolkit = aopkit.Toolkit([lambda_tool], kernel=kernel)
            await toolkit.call(aopkit.ToolUseBlock("c", "lambda_tool", {"d": {"a": {"x": 2}}}))
            await kernel.aclose()

        def lambda_tool(d: D) -> D:
            return d

        asyncio.run(main())
        json_schema(D)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pydantic")
        assert not loaded, loaded
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_the_schema_builder_is_reusable_for_one_object_of_several_types():
    schemas = Schemas()
    properties = {"a": schemas.of(Tree), "b": schemas.of(list[Folder])}
    rooted = schemas.rooted({"type": "object", "properties": properties})
    assert set(rooted["$defs"]) == {"Tree", "Folder"}


async def test_a_validator_that_breaks_is_an_error_of_ours_naming_it(kernel):
    class Fragile(BaseModel):
        x: int

        @field_validator("x")
        @classmethod
        def broken(cls, value: int) -> int:
            raise RuntimeError("validator bug")

    with pytest.raises(DecodeError, match="validator bug"):
        Target.of(Fragile, kernel).parse('{"x": 1}')


async def test_pydantic_dataclasses_go_through_pydantic(kernel):
    @pydantic.dataclasses.dataclass
    class Box:
        size: int = Field(gt=0)

    assert json_schema(Box)["properties"]["size"]["exclusiveMinimum"] == 0
    assert Target.of(Box, kernel).parse('{"size": 2}') == Box(size=2)
    with pytest.raises(DecodeError, match="size: Input should be greater than 0"):
        Target.of(Box, kernel).parse('{"size": 0}')


async def test_a_union_of_models_as_a_tool_parameter_is_told_apart_by_pydantic(kernel):
    def adopt(pet: Union[Cat, Dog], friends: list[Union[Cat, Dog]]) -> str:  # noqa: UP007
        """Adopt a pet."""
        return f"{type(pet).__name__} with {[type(f).__name__ for f in friends]}"

    toolkit = Toolkit([adopt], kernel=kernel)
    pet = toolkit.specs()[0].parameters["properties"]["pet"]
    assert pet == {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}
    use = ToolUseBlock("c1", "adopt", {"pet": {"good": True}, "friends": [{"lives": 3}]})
    assert (await toolkit.call(use)).output == "Dog with ['Cat']"
    use = ToolUseBlock("c2", "adopt", {"pet": {"good": True}, "friends": [{"lives": "x"}]})
    result = await toolkit.call(use)
    assert result.is_error and "friends[0]" in result.output


def test_a_union_pydantic_cannot_describe_is_a_schema_error_naming_it():
    with pytest.raises(SchemaError, match="pydantic cannot describe"):
        json_schema(Union[Cat, Folder])  # noqa: UP007 - an attrs class pydantic does not know


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(JSON, st.fixed_dictionaries({"items": JSON, "buyer": JSON})))
def test_any_json_value_is_an_instance_or_a_decode_error(value):
    codec = Codec({})
    for kind in (Person, Order, Owner, Tree, Item, Movie):
        try:
            made = codec.load(value, kind)
        except DecodeError:
            continue
        assert isinstance(made, dict if kind is Movie else kind)
