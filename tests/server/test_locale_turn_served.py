"""A served Twilio call runs with the turn-taking of its locale row (real server, sockets)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from voxpipe.call import Call
from voxpipe.config.locale_table import LocaleTable
from voxpipe.config.locales import LocaleRow
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.pipelines import Pipeline
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.server.signature import SIGNATURE_HEADER, compute_signature
from voxpipe.testing.twilio_caller import TwilioCaller, parse_twiml_stream

pytestmark = pytest.mark.slow

TOKEN = "c5e0a3f2c1d4e6f7a8b9c0d1e2f3a4b5"


async def test_each_call_gets_its_locale_rows_turn_taking(tmp_path: Path) -> None:
    db = tmp_path / "voxpipe.sqlite3"
    table = LocaleTable.sqlite(str(db))
    await table.start()
    await table.upsert(
        LocaleRow.from_mapping(
            {
                "locale": "es-ES",
                "stt_model": "nova-2",
                "stt_language": "es",
                "tts_voice": "v-es",
                "tts_language": "es",
                "greeting": "Hola.",
                "countries": "ES",
                "calling_codes": "34",
                "turn_detection": "vad",
                "vad_stop_s": "0.45",
                "turn_max_wait_s": "3",
            }
        )
    )
    await table.close()
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, sqlite_path=str(db), twilio_auth_token=TOKEN
    )
    seen: dict[str, tuple[str, float, str | None]] = {}

    async def bot(call: Call) -> Pipeline:
        params = call.transport.params
        turn = params.turn.mode if params.turn is not None else None
        seen[call.caller] = (call.locale, params.vad_params.stop_secs, turn)
        return Pipeline([call.transport.input(), call.transport.output()])

    app = create_app(bot, settings)
    async with running_server(app, settings) as srv, httpx.AsyncClient() as http:
        for n, caller in enumerate(("+34911234567", "+12025550143")):
            data = {
                "CallSid": f"CA{n}" + "0" * 31,
                "AccountSid": "AC" + "0" * 32,
                "From": caller,
                "To": "+18005551212",
                "CallStatus": "ringing",
                "Direction": "inbound",
            }
            url = f"{srv.url}/twilio/voice"
            headers = {SIGNATURE_HEADER: compute_signature(TOKEN, url, data)}
            resp = await http.post(url, data=data, headers=headers)
            assert resp.status_code == 200, resp.text
            stream_url, params = parse_twiml_stream(resp.text)
            phone = TwilioCaller(
                stream_url,
                custom_parameters=params,
                call_sid=data["CallSid"],
                audio=b"\xff" * 8000,
                realtime=False,
            )
            log = await phone.run(until=lambda _, who=caller: who in seen, timeout=20)
            assert log.errors == []
    assert seen["+34911234567"] == ("es-ES", 0.45, "vad")
    assert seen["+12025550143"] == ("en-US", 0.2, "smart")
