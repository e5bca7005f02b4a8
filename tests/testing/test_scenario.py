"""`voxpipe test`: scenario files run against a bot offline, checked turn by turn."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from voxpipe.cli import main
from voxpipe.testing import run_scenario
from voxpipe.testing.scenario_schema import ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "bots" / "examples"

TOOL_BOT = """
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings

INTENTS = [Intent("hi", keywords=["hello"], reply="Hi, this is the test bot.")]


async def bot(call):
    context = LLMContext("test")
    llm = llm_from_settings(call.settings, intents=INTENTS, default_reply="Pardon?")

    @llm.function({"type": "object", "properties": {"city": {"type": "string"}}})
    async def weather(city: str) -> dict:
        return {"summary": "sunny" if city.lower() == "paris" else "rainy"}

    return Pipeline([
        call.transport.input(), stt_from_settings(call.settings), UserContextAggregator(context),
        llm, tts_from_settings(call.settings), call.transport.output(),
        AssistantContextAggregator(context),
    ])
"""

SCENARIO = """
bot: bot.py
latency: {llm_first_token_ms: 300, tts_ms: 150}
replies:
  - when: "weather in (?P<city>\\\\w+)"
    say: "Checking {city}."
    tool: weather
    args: {city: "{city}"}
    after_tool: "It is {summary} in {city}."
turns:
  - caller: "hello"
    expect: {reply_matches: "^Hi, this is the test bot", max_latency_ms: 450}
  - caller: "what is the weather in Paris"
    expect: {tool: weather, args: {city: Paris}, reply_matches: "sunny in Paris"}
"""


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    (tmp_path / "bot.py").write_text(TOOL_BOT, encoding="utf-8")
    return tmp_path


def write(dir_: Path, name: str, text: str) -> Path:
    path = dir_ / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_passing_scenario_uses_the_replies_the_tool_and_the_latency_block(
    bot_dir: Path,
) -> None:
    result = run_scenario(write(bot_dir, "ok.yaml", SCENARIO))
    assert result.passed, result.report()
    hello, weather = result.turns
    assert hello.reply == "Hi, this is the test bot."
    assert hello.latency_ms == 450.0  # LLM first token 300 ms + TTS first audio 150 ms
    assert weather.tools == [{"name": "weather", "arguments": {"city": "Paris"}}]
    assert "It is sunny in Paris." in weather.reply
    assert result.report().startswith(f"PASS {bot_dir / 'ok.yaml'} (2 turns,")
    again = run_scenario(bot_dir / "ok.yaml")  # deterministic: the virtual clock
    assert [(o.reply, o.tools, o.latency_ms) for o in again.turns] == [
        (o.reply, o.tools, o.latency_ms) for o in result.turns
    ]
    assert again.call_seconds == result.call_seconds


def test_a_failing_scenario_reports_turn_expectation_and_what_happened(
    bot_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = SCENARIO.replace("max_latency_ms: 450", "max_latency_ms: 400").replace(
        "args: {city: Paris}", "args: {city: London}"
    )
    path = write(bot_dir, "fails.yaml", bad)
    assert main(["test", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"FAIL {path}",
        "  turn 1 (caller: 'hello')",
        "    expected: max_latency_ms 400",
        "    happened: the bot started answering 450 ms after the caller stopped",
        "  turn 2 (caller: 'what is the weather in Paris')",
        '    expected: tool weather with args {"city": "London"}',
        '    happened: tools called: weather({"city": "Paris"})',
        "0 passed, 1 failed",
    ]


def test_no_reply_hangup_and_escalation_are_checked(bot_dir: Path) -> None:
    result = run_scenario(
        {
            "bot": str(bot_dir / "bot.py"),
            "turns": [
                {"caller": "hello", "expect": {"no_reply": True, "hangup": True}},
                {"press": "5", "expect": {"no_reply": True, "escalated": False}},
            ],
        }
    )
    assert [(f.turn, f.expected) for f in result.failures] == [
        ("turn 1 (caller: 'hello')", "no_reply"),
        ("turn 1 (caller: 'hello')", "hangup: true"),
    ]
    assert result.failures[0].happened == "the bot said 'Hi, this is the test bot.'"


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            ("reply_matches:", "reply_match:"),
            "turns[0].expect: unknown key 'reply_match' (did you mean 'reply_matches'?)",
        ),
        (
            ('"^Hi, this is', '"(^Hi, this is'),
            "turns[0].expect.reply_matches: bad regular expression '(^Hi, this is the test bot'",
        ),
        (("bot: bot.py", "bot: nowhere.py"), "bot: bot file nowhere.py does not exist"),
        (("latency:", "latnecy:"), "unknown key 'latnecy' (did you mean 'latency'?)"),
    ],
)
def test_each_validation_error_is_one_line_and_exits_2(
    bot_dir: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], line: str
) -> None:
    path = write(bot_dir, "invalid.yaml", SCENARIO.replace(*change, 1))
    assert main(["test", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"voxpipe: error: {path}: {line}"), err[0]


def test_validation_reports_every_problem_and_unknown_settings(bot_dir: Path) -> None:
    text = SCENARIO.replace("latency:", "settings: {CONSENT_MOD: 'off'}\nlatency:").replace(
        'caller: "hello"', 'caler: "hello"'
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(bot_dir, "many.yaml", text))
    problems = info.value.problems
    assert any(
        "unknown setting 'CONSENT_MOD' (did you mean 'CONSENT_MODE'?)" in p for p in problems
    )
    assert any("turns[0]: unknown key 'caler'" in p for p in problems)


def test_junit_report_and_jobs(bot_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = write(bot_dir, "a_ok.yaml", SCENARIO)
    bad = write(bot_dir, "b_bad.yaml", SCENARIO.replace("sunny in Paris", "snowing"))
    report = bot_dir / "out" / "junit.xml"
    assert main(["test", str(bot_dir), "--jobs", "2", "--junit", str(report)]) == 1
    out = capsys.readouterr().out
    # Results in file order whatever finished first.
    assert out.index(f"PASS {ok}") < out.index(f"FAIL {bad}")
    assert "1 passed, 1 failed" in out
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases[str(ok)].find("failure") is None
    failure = cases[str(bad)].find("failure")
    assert failure is not None
    assert "expected reply_matches /snowing/" in (failure.get("message") or "")


def test_every_example_scenario_passes() -> None:
    scenarios = sorted(EXAMPLES.glob("*.yaml"))
    assert [p.stem for p in scenarios] == [
        "01_echo",
        "02_say_hello",
        "03_tools",
        "04_interruptions",
        "05_handoff",
        "06_state",
        "07_locales",
    ]
    for bot in EXAMPLES.glob("*.py"):
        assert len(bot.read_text(encoding="utf-8").splitlines()) <= 80, bot
    assert main(["test", str(EXAMPLES), "--jobs", "2"]) == 0


def test_audio_mode_speaks_through_the_vad_and_the_recogniser(tmp_path: Path) -> None:
    agent = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"
    scenario = f"""
bot: {agent}
caller: {{from: "+14155550100", country: US}}
settings: {{CONSENT_MODE: "off"}}
turns:
  - caller: "what are your opening hours"
    expect: {{reply_matches: "eight"}}
  - caller: "i want to talk to a human"
    expect: {{escalated: true}}
"""
    # Through the command: a spoken scenario runs in a fresh process (espeak-ng's waveform
    # depends on what it synthesized before in a process).
    assert main(["test", "--audio", str(write(tmp_path, "spoken.yaml", scenario))]) == 0


@pytest.mark.slow
async def test_live_uses_the_configured_provider_on_the_real_clock(bot_dir: Path) -> None:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.testing.fakes import FakeOpenAI

    async with FakeOpenAI(replies=["Bonjour from the live model."], first_token_delay=0.05) as oa:
        settings = VoxpipeSettings(  # type: ignore[call-arg]
            _env_file=None, openai_api_key="test-key", openai_base_url=oa.base_url
        )
        scenario = {
            "bot": str(bot_dir / "bot.py"),
            "turns": [{"caller": "hello", "expect": {"reply_matches": "live model"}}],
        }
        live = await asyncio.to_thread(run_scenario, scenario, live=True, settings=settings)
        assert live.passed, live.report()
        assert len(oa.requests) == 1
        # Without --live the keys are dropped: the bot's scripted dialog answers, no request.
        offline = await asyncio.to_thread(run_scenario, scenario, settings=settings)
        assert [f.happened for f in offline.failures] == [
            "the bot said 'Hi, this is the test bot.'"
        ]
        assert len(oa.requests) == 1


def test_the_support_agent_scenario_passes_and_keeps_no_card_number() -> None:
    result = run_scenario(EXAMPLES.parent / "support_agent.yaml")
    assert result.passed, result.report()
    tools = [c["name"] for o in result.turns for c in o.tools]
    assert tools == ["order_status", "start_payment"]


def test_the_examples_with_a_phrase_list_pass_spoken_too() -> None:
    # Through the real VAD and PocketSphinx: 06 (numbers) and 07 (German) are text-mode only.
    spoken = [
        str(EXAMPLES / f"{n}.yaml")
        for n in ("02_say_hello", "03_tools", "04_interruptions", "05_handoff")
    ]
    assert main(["test", "--audio", *spoken]) == 0
