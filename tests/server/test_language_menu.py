"""The IVR language menu: a country with several language rows gets ``<Gather>`` first, and the
key the caller presses picks the locale their call runs in (real server, real sockets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.pipelines import Pipeline
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.server.signature import SIGNATURE_HEADER, compute_signature
from voxpipe.testing.twilio_caller import TwilioCaller, parse_twiml_stream

pytestmark = pytest.mark.slow

TOKEN = "b5e0a3f2c1d4e6f7a8b9c0d1e2f3a4b5"


def form(call_sid: str, caller: str, country: str | None) -> dict[str, str]:
    data = {
        "CallSid": call_sid,
        "AccountSid": "AC00000000000000000000000000000000",
        "From": caller,
        "To": "+18005551212",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    if country:
        data["FromCountry"] = country
    return data


class Rig:
    """A server whose bot records the locale and consent policy each call got."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.settings = VoxpipeSettings(  # type: ignore[call-arg]
            _env_file=None,
            sqlite_path=str(tmp_path / "voxpipe.sqlite3"),
            twilio_auth_token=TOKEN,
            **settings,
        )
        self.calls: list[tuple[str, str | None]] = []

        async def bot(call: Call) -> Pipeline:
            self.calls.append((call.locale, call.consent_policy))
            return Pipeline([call.transport.input(), call.transport.output()])

        self.app = create_app(bot, self.settings)

    async def post(self, http: httpx.AsyncClient, url: str, data: dict[str, str]) -> str:
        """POST signed like Twilio; the TwiML answer."""
        headers = {SIGNATURE_HEADER: compute_signature(TOKEN, url, data)}
        resp = await http.post(url, data=data, headers=headers)
        assert resp.status_code == 200, resp.text
        return resp.text

    async def stream(self, twiml: str, call_sid: str) -> None:
        """Connect the stream the TwiML names and hang up once the bot has the call."""
        stream_url, params = parse_twiml_stream(twiml)
        caller = TwilioCaller(
            stream_url,
            custom_parameters=params,
            call_sid=call_sid,
            audio=b"\xff" * 8000,
            realtime=False,
        )
        count = len(self.calls)
        log = await caller.run(until=lambda _: len(self.calls) > count, timeout=20)
        assert log.errors == [] and log.close_code != 1011


def menu(twiml: str) -> tuple[str, list[tuple[str, str]]]:
    """(action URL, [(language attribute, prompt)]) of a ``<Gather>`` menu."""
    root = ET.fromstring(twiml)
    assert root.find("./Connect") is None, "the menu comes before the stream"
    gather = root.find("./Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    redirect = root.find("./Redirect")
    assert redirect is not None and redirect.text == gather.get("action")  # no key: same URL
    says = [(s.get("language", ""), s.text or "") for s in gather.findall("Say")]
    return str(gather.get("action")), says


async def test_canadian_caller_chooses_french_with_key_2(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with running_server(rig.app, rig.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "1" * 32, "+14165550100", "CA")
        twiml = await rig.post(http, f"{srv.url}/twilio/voice", data)
        action, says = menu(twiml)
        assert says == [
            ("en-CA", "For English, press 1."),
            ("fr-CA", "Pour le français, appuyez sur 2."),
        ]
        assert action.startswith(f"{srv.url}/twilio/voice?")
        # Twilio posts the key to the action (signed over the action URL, query included).
        answer = await rig.post(http, action, {**data, "Digits": "2"})
        stream_url, params = parse_twiml_stream(answer)
        assert params["locale"] == "fr-CA" and "language_menu" not in params
        await rig.stream(answer, data["CallSid"])
    assert rig.calls == [("fr-CA", "notice")]


async def test_no_key_falls_back_to_the_first_row(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with running_server(rig.app, rig.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "2" * 32, "+14165550100", "CA")
        action, _ = menu(await rig.post(http, f"{srv.url}/twilio/voice", data))
        answer = await rig.post(http, action, data)  # the <Redirect>: no Digits
        assert parse_twiml_stream(answer)[1]["locale"] == "en-CA"
        await rig.stream(answer, data["CallSid"])
    assert rig.calls == [("en-CA", "notice")]


async def test_swiss_caller_by_calling_code_hears_three_languages(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with running_server(rig.app, rig.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "3" * 32, "+41445550100", None)  # no FromCountry: +41 is CH
        action, says = menu(await rig.post(http, f"{srv.url}/twilio/voice", data))
        assert says == [
            ("de-CH", "Für Deutsch drücken Sie die 1."),
            ("fr-CH", "Pour le français, appuyez sur 2."),
            ("it-CH", "Per l'italiano, prema 3."),
        ]
        answer = await rig.post(http, action, {**data, "Digits": "3"})
        await rig.stream(answer, data["CallSid"])
    assert rig.calls == [("it-CH", "ivr")]  # Switzerland: asked before anything is kept


async def test_one_language_country_streams_at_once_unless_language_menu_is_set(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    async with running_server(rig.app, rig.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "4" * 32, "+14155550100", "US")
        twiml = await rig.post(http, f"{srv.url}/twilio/voice", data)
        assert ET.fromstring(twiml).find("./Gather") is None
        await rig.stream(twiml, data["CallSid"])
    assert rig.calls == [("en-US", "notice")]

    forced = Rig(tmp_path, language_menu=True)
    async with running_server(forced.app, forced.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "5" * 32, "+14155550100", "US")
        action, says = menu(await forced.post(http, f"{srv.url}/twilio/voice", data))
        # The global menu: the rows with an ivr_digit, on their own keys.
        assert [lang for lang, _ in says] == ["en-US", "es-MX", "fr-FR", "de-DE"]
        assert says[3][1] == "Für Deutsch drücken Sie die 4."
        answer = await forced.post(http, action, {**data, "Digits": "4"})
        await forced.stream(answer, data["CallSid"])
    # German chosen from the US: the jurisdiction (US) decides the consent policy.
    assert forced.calls == [("de-DE", "notice")]


async def test_menu_refuses_an_unsigned_answer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with running_server(rig.app, rig.settings) as srv, httpx.AsyncClient() as http:
        data = form("CA" + "6" * 32, "+14165550100", "CA")
        action, _ = menu(await rig.post(http, f"{srv.url}/twilio/voice", data))
        forged = await http.post(action, data={**data, "Digits": "2"})
        assert forged.status_code == 403
    assert rig.calls == []


def test_menu_twiml_escapes_what_it_quotes() -> None:
    from voxpipe.config.locales import LocaleRow
    from voxpipe.server.language_menu import menu_twiml

    row = LocaleRow("nl-BE", "nova-2", "nl", "v", "nl", "Hallo", ("BE",))
    twiml = menu_twiml([("1", row)], "https://x.example/twilio/voice?a=1&language_menu=1:nl-BE")
    root = ET.fromstring(twiml)  # well-formed although the URL holds "&"
    say = root.find("./Gather/Say")
    assert say is not None and say.text == "For nl-BE, press 1."  # no Dutch wording shipped
