"""A worker's capacity and drain (issue 15), on real sockets and a real Redis: a full worker is
unready and answers new calls with a polite busy message, or streams them to another server with
room found in the Redis worker registry; a draining worker takes no new call and lets live ones
finish."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from redis.asyncio import Redis

from tests.server.conftest import ECHO_BOT, make_settings, serve, servers
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.server.state import ServerState
from voxpipe.server.worker_registry import WorkerRegistry
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller


class LiveCall:
    """A simulated Twilio call kept up until ``hang_up()``."""

    def __init__(self, caller: TwilioCaller) -> None:
        self.caller = caller
        self._hang_up = False
        self.task = asyncio.create_task(caller.run(until=self._done, timeout=60))

    def _done(self, log: CallerLog) -> bool:
        return self._hang_up

    async def hang_up(self) -> CallerLog:
        self._hang_up = True
        return await self.task


async def _until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)  # the server's side is seen from outside only: poll


def _state(app: Any) -> ServerState:
    return app.state.voxpipe  # type: ignore[no-any-return]


async def test_a_full_worker_is_unready_and_answers_busy_politely(speech_mulaw: bytes) -> None:
    app = create_app(ECHO_BOT, make_settings(max_calls_per_worker=1))
    st = _state(app)
    async with serve(app, st.settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/readyz")).json() == {"ready": True, "state": "ready"}
        call = LiveCall(await TwilioCaller.dial(srv.url, audio=speech_mulaw[:8000], http=http))

        async def taken() -> bool:
            return len(st.registry) == 1

        await _until(taken)
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["state"]) == (503, "full")
        busy = await http.post("/twilio/voice", data={"CallSid": "CA2", "From": "+15550100009"})
        assert busy.status_code == 200 and "<Stream" not in busy.text
        assert "<Say" in busy.text and "lines are busy" in busy.text and "<Hangup/>" in busy.text
        health = (await http.get("/healthz")).json()
        assert health["workers"][0]["capacity"] == 1 and health["workers"][0]["state"] == "full"
        await call.hang_up()

        async def ready_again() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await _until(ready_again)
    assert st.metrics.calls_refused["twilio", "busy"] == 1


async def test_the_webhook_of_a_full_server_streams_the_call_to_one_with_room(
    speech_mulaw: bytes, redis_prefix: str
) -> None:
    ports = servers.free_port(), servers.free_port()
    apps = [
        create_app(
            ECHO_BOT,
            make_settings(
                max_calls_per_worker=1,
                redis_url=servers.REDIS_URL,
                redis_key_prefix=redis_prefix,
                worker_url=f"http://127.0.0.1:{port}",
                worker_heartbeat_s=60.0,  # the test publishes when it needs to
                stream_token_secret="one secret for every worker of the service",
            ),
            host="127.0.0.1",
        )
        for port in ports
    ]
    a, b = (_state(app) for app in apps)
    async with (
        serve_on(apps[0], ports[0]) as url_a,
        serve_on(apps[1], ports[1]),
        httpx.AsyncClient() as http,
    ):
        first = LiveCall(await TwilioCaller.dial(url_a, audio=speech_mulaw[:8000], http=http))

        async def a_full() -> bool:
            return len(a.registry) == 1

        await _until(a_full)
        await b.worker_registry.publish()  # B: room for one
        moved = await TwilioCaller.dial(url_a, audio=speech_mulaw[:8000], http=http)
        assert moved.url == f"ws://127.0.0.1:{ports[1]}/twilio/stream"
        second = LiveCall(moved)

        async def b_took_it() -> bool:
            return len(b.registry) == 1

        await _until(b_took_it)
        assert len(a.registry) == 1 and a.metrics.calls_refused["twilio", "overflow"] == 1
        # B full too (its entry says so): no server has room, the caller hears the busy message.
        await b.worker_registry.publish()
        busy = await http.post(f"{url_a}/twilio/voice", data={"CallSid": "CA3"})
        assert "<Say" in busy.text and "<Stream" not in busy.text
        await second.hang_up()

        async def b_free() -> bool:
            return len(b.registry) == 0

        await _until(b_free)
        # Room on B again, but B is draining: not a target.
        b.call_limiter.draining = True
        await b.worker_registry.publish()
        busy = await http.post(f"{url_a}/twilio/voice", data={"CallSid": "CA4"})
        assert "<Stream" not in busy.text and a.metrics.calls_refused["twilio", "busy"] == 2
        await first.hang_up()


def serve_on(app: Any, port: int) -> Any:
    @contextlib.asynccontextmanager
    async def run() -> Any:
        async with running_server(app, _state(app).settings, port=port) as srv:
            yield srv.url

    return run()


async def test_stale_registry_entries_are_dropped(redis_prefix: str) -> None:
    client = Redis.from_url(servers.REDIS_URL)
    registry = WorkerRegistry(
        client,
        prefix=redis_prefix,
        url="https://me.example",
        heartbeat_s=1.0,
        load=lambda: {"capacity": 10, "held_slots": 0, "draining": False},
    )
    try:
        dead = {"url": "https://dead.example", "capacity": 10, "held_slots": 0, "ts": 1.0}
        alive = {"url": "https://b.example", "capacity": 4, "held_slots": 1, "ts": time.time()}
        await client.hset(registry.key, "dead:1", json.dumps(dead))
        await client.hset(registry.key, "b:1", json.dumps(alive))
        await registry.publish()
        assert await registry.find_room() == "wss://b.example"  # not itself, not the dead one
        assert set(await client.hkeys(registry.key)) == {b"b:1", registry.worker_id.encode()}
    finally:
        await registry.stop()


async def test_draining_takes_no_new_call_and_waits_for_live_ones(speech_mulaw: bytes) -> None:
    app = create_app(ECHO_BOT, make_settings(drain_timeout_s=30.0))
    st = _state(app)
    assert st.capacity is not None
    async with serve(app, st.settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        call = LiveCall(await TwilioCaller.dial(srv.url, audio=speech_mulaw[:8000], http=http))

        async def taken() -> bool:
            return len(st.registry) == 1

        await _until(taken)
        drain = asyncio.create_task(st.capacity.drain())

        async def unready() -> bool:
            return (await http.get("/readyz")).json()["state"] == "draining"

        await _until(unready)
        busy = await http.post("/twilio/voice", data={"CallSid": "CAlate"})
        assert "<Say" in busy.text and "<Stream" not in busy.text
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            async with connect(srv.ws_url + "/twilio/stream"):
                raise AssertionError("a draining worker accepted a stream")
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
        assert not drain.done() and len(st.registry) == 1  # the live call goes on
        log = await call.hang_up()
        async with asyncio.timeout(10):
            assert await drain == 0  # it ended on its own: none left to end at the timeout
    assert log.close_code == 1000
