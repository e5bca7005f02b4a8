"""Tools declared once: the JSON schema comes from the handler's signature and docstring, the
model's arguments are checked and converted, and the scripted dialog uses the same tools."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel

from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    ErrorFrame,
    FrameDirection,
    FunctionCallResultFrame,
    LLMMessagesFrame,
    LLMTextFrame,
)
from voxpipe.processors.llm import Intent, LLMService, ScriptedLLMService
from voxpipe.processors.llm.tool_schema import ToolArgumentsError, tool_signature
from voxpipe.testing import run_frames
from voxpipe.transports.memory import MemoryTransport

ROOT = Path(__file__).resolve().parents[3]


class Day(enum.Enum):
    MONDAY = "monday"
    SUNDAY = "sunday"


class Slot(BaseModel):
    """A time to book."""

    day: Day
    hour: int


def params(llm: LLMService, name: str) -> dict[str, Any]:
    spec = llm.function_named(name)
    assert spec is not None
    return dict(spec.schema["function"]["parameters"])


def user(text: str) -> LLMMessagesFrame:
    return LLMMessagesFrame([{"role": "user", "content": text}])


# ---------------------------------------------------------------------------- the schema


def test_scalar_types_and_required() -> None:
    llm = ScriptedLLMService()

    @llm.function
    async def f(name: str, count: int, ratio: float, ok: bool) -> None:
        """Do f."""

    p = params(llm, "f")
    assert p["properties"] == {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "ok": {"type": "boolean"},
    }
    assert p["required"] == ["name", "count", "ratio", "ok"]
    assert llm.tools is not None and llm.tools[0]["function"]["description"] == "Do f."


def test_lists_literals_enums_optional_and_defaults() -> None:
    llm = ScriptedLLMService()

    @llm.function(name="plan", cancel_on_interruption=False)
    def handler(
        days: list[Day],
        kind: Literal["table", "bar"],
        note: Optional[str] = None,  # noqa: UP045 - the typing form is the point here
        size: int | None = None,
        tags: list[str] | None = None,
        late: bool = False,
    ) -> None:
        """Plan a visit."""

    p = params(llm, "plan")
    props = p["properties"]
    assert props["days"] == {
        "type": "array",
        "items": {"type": "string", "enum": ["monday", "sunday"]},
    }
    assert props["kind"] == {"type": "string", "enum": ["table", "bar"]}
    assert props["note"] == {"type": "string"}  # optional: its type, not required
    assert props["size"] == {"type": "integer"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["late"] == {"type": "boolean", "default": False}
    assert p["required"] == ["days", "kind"]
    spec = llm.function_named("plan")
    assert spec is not None and spec.cancel_on_interruption is False and spec.handler is handler


def test_descriptions_from_annotated_and_the_google_docstring() -> None:
    llm = ScriptedLLMService()

    async def book(
        slot: Slot, people: Annotated[int, "How many people come"], note: str = ""
    ) -> dict[str, Any]:
        """Book a table for the caller, when they have said
        when and for how many.

        Ask first.

        Args:
            slot: When the caller wants to come.
            people: Ignored: Annotated wins.
            note: Anything for the staff,
                on one or more lines.
        """
        return {}

    llm.register_function(book)
    spec = llm.function_named("book")
    assert spec is not None
    assert spec.schema["function"]["description"] == (
        "Book a table for the caller, when they have said when and for how many.\n\nAsk first."
    )
    props = params(llm, "book")["properties"]
    assert props["people"]["description"] == "How many people come"
    assert props["note"]["description"] == "Anything for the staff, on one or more lines."
    # A pydantic model is a nested object, inlined (no $ref for a model to follow).
    assert props["slot"] == {
        "type": "object",
        "description": "When the caller wants to come.",
        "properties": {
            "day": {"type": "string", "enum": ["monday", "sunday"]},
            "hour": {"type": "integer"},
        },
        "required": ["day", "hour"],
    }


def test_an_explicit_schema_wins() -> None:
    llm = ScriptedLLMService()
    explicit = {"type": "object", "properties": {"city": {"type": "string", "description": "X"}}}

    @llm.function(explicit, description="Weather.")
    async def weather(city: str, unit: str = "C") -> str:
        """Not this."""
        return "sunny"

    spec = llm.function_named("weather")
    assert spec is not None
    assert spec.schema["function"] == {
        "name": "weather",
        "description": "Weather.",
        "parameters": explicit,
    }
    # The signature still checks the call: a missing argument is the model's error to fix.
    assert spec.signature is not None
    with pytest.raises(ToolArgumentsError, match="missing required argument 'city'"):
        spec.signature.validate({})
    assert spec.signature.validate({"city": 3}) == {"city": 3}  # as it came: no conversion


def test_arguments_are_converted_to_the_parameter_types() -> None:
    async def book(slot: Slot, people: int, days: list[Day] | None = None) -> None:
        """Book."""

    sig = tool_signature(book, "book")
    got = sig.validate({"slot": {"day": "monday", "hour": "9"}, "people": "3", "days": ["sunday"]})
    assert got == {"slot": Slot(day=Day.MONDAY, hour=9), "people": 3, "days": [Day.SUNDAY]}
    with pytest.raises(ToolArgumentsError) as err:
        sig.validate({"people": "three", "colour": "red"})
    message = str(err.value)
    assert "missing required argument 'slot'" in message
    assert "argument 'people': Input should be a valid integer" in message
    assert "unexpected argument 'colour'" in message
    assert "Expected arguments: slot (object), people (integer), days (" in message


def test_handlers_that_cannot_have_a_schema_say_why() -> None:
    llm = ScriptedLLMService()

    class Opaque:
        pass

    def uses_opaque(x: Opaque) -> None:
        pass

    with pytest.raises(TypeError, match="cannot resolve|no JSON schema"):
        llm.register_function(uses_opaque)
    with pytest.raises(TypeError, match="use register_function\\(name, handler\\)"):
        llm.register_function(lambda: None)
    llm.register_function("anything", lambda **kw: kw)  # **kwargs: every argument passes
    spec = llm.function_named("anything")
    assert spec is not None and spec.signature is not None
    assert spec.signature.validate({"a": 1}) == {"a": 1}


# ---------------------------------------------------------------------------- the README


def readme_bot(tmp_path: Path) -> Path:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def next_opening" in b
    )
    path = tmp_path / "hours.py"
    path.write_text(block, encoding="utf-8")
    return path


async def test_the_readme_example_tells_the_model_about_day(tmp_path: Path) -> None:
    from voxpipe.call import load_bot

    bot = load_bot(readme_bot(tmp_path))
    settings = VoxpipeSettings(_env_file=None)  # type: ignore[call-arg]
    pipeline = await bot(Call(transport=MemoryTransport(), call_id="CAreadme", settings=settings))
    (llm,) = [p for p in pipeline.processors_list if isinstance(p, LLMService)]
    p = params(llm, "next_opening")
    assert p["properties"]["day"]["type"] == "string"
    assert p["required"] == ["day"]
    # Offline, its intent calls the same tool with the caller's day.
    r = await run_frames([llm], [user("when do you open on Sunday")])
    (result,) = r.of_type(FunctionCallResultFrame)
    assert result.arguments == {"day": "Sunday"}
    assert "".join(f.text for f in r.of_type(LLMTextFrame)).endswith("We're closed on Sundays.")


# ---------------------------------------------------------------------------- calls


async def test_a_call_without_its_arguments_is_a_tool_error_not_a_crash() -> None:
    ran: list[str] = []
    llm = ScriptedLLMService(
        [
            Intent(
                "open", keywords=["open"], tool="next_opening", arguments={}, after_tool="{result}"
            )
        ]
    )

    @llm.function
    async def next_opening(day: str) -> str:
        """When the shop opens on a given day."""
        ran.append(day)
        return "nine"

    r = await run_frames([llm], [user("when do you open")])
    assert ran == []
    (result,) = r.of_type(FunctionCallResultFrame)
    assert result.result == {
        "error": "invalid arguments: next_opening: missing required argument 'day'. "
        "Expected arguments: day (string)"
    }
    assert not r.of_type(ErrorFrame, FrameDirection.UPSTREAM)
    # The model got the error as the tool's result and carried on.
    said = "".join(f.text for f in r.of_type(LLMTextFrame))
    assert "missing required argument 'day'" in said


async def test_an_intent_names_the_tool_and_its_groups_become_typed_arguments() -> None:
    got: list[tuple[Any, ...]] = []

    async def book(day: Day, people: int, extras: list[str] | None = None) -> dict[str, Any]:
        """Book a table."""
        got.append((day, people, extras))
        return {"booked": True}

    llm = ScriptedLLMService(
        [
            Intent(
                "book",
                patterns=[
                    r"(?P<people>\d+) people on (?P<day>\w+)(?: with (?P<extras>.+))?"
                    r"(?P<polite> please)?$"
                ],
                tool=book,  # the function itself, or its name
                reply="Booking.",
                after_tool=" Done for {people}{polite}.",
            )
        ]
    )
    llm.register_function(book)
    r = await run_frames([llm], [user("a table for 4 people on Sunday with cake and candles")])
    assert got == [(Day.SUNDAY, 4, ["cake", "candles"])]
    (result,) = r.of_type(FunctionCallResultFrame)
    # The model's call carries JSON values ("polite" is not a parameter: left out).
    assert result.arguments == {"day": "sunday", "people": 4, "extras": ["cake", "candles"]}
