"""FakeTwilioREST against the official twilio client (async HTTP client, base URL overridden)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from voxpipe.testing.fakes import FakeCall, FakeTwilioREST

SID = "AC" + "1" * 32
TOKEN = "secret-token"
# The twilio client calls aiohttp APIs that aiohttp has deprecated; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]
TRANSFER = "<Response><Dial><Conference>support-42</Conference></Dial></Response>"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilioREST]:
    async with FakeTwilioREST(account_sid=SID, auth_token=TOKEN, calls=["CA1", "CA2"]) as tw:
        yield tw


@pytest.fixture
async def client(fake: FakeTwilioREST) -> AsyncIterator[Client]:
    http = AsyncTwilioHttpClient()
    twilio = Client(SID, TOKEN, http_client=http)
    twilio.api.base_url = fake.url
    yield twilio
    assert http.session is not None
    await http.session.close()


async def test_hang_up_then_again_is_404_20404(fake: FakeTwilioREST, client: Client) -> None:
    call = await client.calls("CA1").update_async(status="completed")
    assert call.sid == "CA1" and call.status == "completed"
    assert fake.calls["CA1"].ended and not fake.calls["CA2"].ended
    request = fake.requests[0]
    assert request.method == "POST" and request.form == {"Status": "completed"}
    assert request.auth_user == SID
    assert request.path == f"/2010-04-01/Accounts/{SID}/Calls/CA1.json"
    with pytest.raises(TwilioRestException) as info:
        await client.calls("CA1").update_async(status="completed")
    assert (info.value.status, info.value.code) == (404, 20404)
    assert fake.hangups() == ["CA1"]


async def test_unknown_call_is_404(fake: FakeTwilioREST, client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        await client.calls("CA404").update_async(status="completed")
    assert (info.value.status, info.value.code) == (404, 20404)
    assert fake.requests[0].status == 404


async def test_twiml_redirect_for_warm_transfer(fake: FakeTwilioREST, client: Client) -> None:
    call = await client.calls("CA2").update_async(twiml=TRANSFER)
    assert call.status == "in-progress"
    assert fake.calls["CA2"].twiml == [TRANSFER]
    assert fake.requests[0].form == {"Twiml": TRANSFER}


async def test_fetch_a_call(fake: FakeTwilioREST, client: Client) -> None:
    fake.add_call(FakeCall(sid="CA3", from_="+15551230000", to="+15559870000"))
    call = await client.calls("CA3").fetch_async()
    assert (call.sid, call.status, call._from, call.to) == (
        "CA3",
        "in-progress",
        "+15551230000",
        "+15559870000",
    )


async def test_wrong_credentials_are_401_20003(fake: FakeTwilioREST) -> None:
    http = AsyncTwilioHttpClient()
    bad = Client(SID, "wrong", http_client=http)
    bad.api.base_url = fake.url
    try:
        with pytest.raises(TwilioRestException) as info:
            await bad.calls("CA1").update_async(status="completed")
    finally:
        assert http.session is not None
        await http.session.close()
    assert (info.value.status, info.value.code) == (401, 20003)
    assert not fake.calls["CA1"].ended
