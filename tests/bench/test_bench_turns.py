"""`voxpipe bench turns`: what the caller heard is placed and judged right, and a tiny run works."""

from types import SimpleNamespace

import pytest

from voxpipe.bench.turns import analyse, targets_met
from voxpipe.bench.turns_script import CHUNK_SECS, Case, Script
from voxpipe.bench.turns_wire import ReplyBook, follow_reply, place

RATE = 8000  # ulaw_8000: one byte a sample


def _book(*seconds: float) -> ReplyBook:
    book = ReplyBook(60.0)
    for s in seconds:
        book.new(s)
    return book


def _chunks(audio: bytes, start: float) -> list[tuple[float, bytes]]:
    """Audio as the far end plays it: 20 ms chunks back to back from ``start``."""
    step = round(CHUNK_SECS * RATE)
    return [(start + i / RATE, audio[i : i + step]) for i in range(0, len(audio), step)]


def _secs(x: float) -> int:
    return round(x * RATE)


def test_replies_share_no_four_character_run_and_their_audio_is_placed_exactly():
    book = _book(6.0, 1.5, 6.0, 1.5)
    grams = [{t.lower()[i : i + 4] for i in range(len(t) - 3)} for t in book.texts]
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            shared = {g for g in grams[i] & grams[j] if g.strip(" .").isalpha() and len(g) == 4}
            assert not shared, (i, j, shared)
    assert 5.5 <= len(book.audio[0]) / RATE <= 6.5
    # Reply 2 heard whole, then the first second of reply 1, after a gap.
    played = _chunks(book.audio[2], 10.0) + _chunks(book.audio[1][: _secs(1.0)], 20.0)
    heard = place(played, book)
    assert [(h.reply, h.pos, h.pos_end) for h in heard] == [
        (2, 0, len(book.audio[2])),
        (1, 0, _secs(1.0)),
    ]
    assert heard[0].start == 10.0 and heard[1].end == pytest.approx(21.0)


def test_audio_from_no_reply_is_not_placed():
    book = _book(1.5)
    noise = bytes(range(7, 167))  # 20 ms of bytes no reply has in this order
    heard = place([(0.0, noise), (1.0, book.audio[0])], book)
    assert heard[0].reply == -1 and heard[1].reply == 0


@pytest.mark.parametrize(
    ("resume_from", "outcome"),
    [
        (None, "stopped"),  # flushed for good (today's behaviour on a backchannel)
        (2.0, "resumed"),  # back exactly where the caller stopped hearing it
        (1.7, "resumed"),  # a little before (a word again): allowed
        (0.0, "restarted"),  # from the start of the reply
        (1.0, "restarted"),  # a whole second again
        (2.3, "skipped"),  # 0.3 s the caller never heard
    ],
)
def test_a_reply_talked_over_is_followed_by_its_audio(resume_from, outcome):
    book = _book(6.0)
    audio = book.audio[0]
    cut = _secs(2.0)
    played = _chunks(audio[:cut], 0.0)  # heard 0..2 s, then silent
    if resume_from is not None:
        played += _chunks(audio[_secs(resume_from) :], 2.6)
    verdict = follow_reply(place(played, book), 1.5, book, until=30.0)
    assert verdict.reply == 0
    assert verdict.outcome == outcome
    if outcome != "restarted":
        assert verdict.stopped_at == pytest.approx(2.0)
    if resume_from is not None:
        assert verdict.silent_secs == pytest.approx(0.6)


def test_a_reply_that_plays_on_is_kept_and_no_reply_means_nothing_to_follow():
    book = _book(6.0)
    heard = place(_chunks(book.audio[0], 0.0), book)
    kept = follow_reply(heard, 1.5, book, until=30.0)
    assert (kept.outcome, kept.stopped_at, kept.silent_secs) == ("kept", None, 0.0)
    assert follow_reply(heard, 7.0, book, until=30.0).outcome == "no_reply"


def _clock(seconds: float) -> SimpleNamespace:
    """Caller audio time == call clock == perf_counter (the bench maps them per chunk)."""
    n = round(seconds / CHUNK_SECS)
    times = [i * CHUNK_SECS for i in range(n)]
    return SimpleNamespace(clock=times, perf=times, call=lambda s: s, wall=lambda s: s)


def test_analyse_counts_cut_offs_per_pause_backchannels_and_barge_ins():
    book = _book(1.5, 1.5, 1.5, 6.0, 1.5, 6.0, 1.5)
    short = book.audio
    cases = [
        # A paused sentence answered only after it ended: no cut-off.
        Case(0, "pause", 1.0, 4.0, 10.0, pause=0.7, pause_start=2.0),
        # A paused sentence the bot answered inside the pause (reply heard at 2.5 s): cut off.
        Case(1, "pause", 11.0, 14.0, 20.0, pause=0.7, pause_start=12.0),
        # A pause of 1 s, answered 0.1 s after the end: still too early (the VAD's stop is
        # 0.2 s: no reply to the whole sentence can be decided before 14.2 s).
        Case(2, "pause", 21.0, 24.0, 30.0, pause=1.0, pause_start=22.0),
        # A backchannel over a long reply, which was flushed: not resumed.
        Case(3, "backchannel", 31.0, 32.0, 45.0, over=35.0, over_end=35.4),
        # A barge-in the bot ignored (its reply played on): missed.
        Case(4, "barge_in", 46.0, 47.0, 60.0, over=50.0, over_end=52.0),
        # A question the bot never answered.
        Case(5, "complete", 61.0, 63.0, 70.0),
    ]
    played = (
        _chunks(short[0], 4.9)
        + _chunks(short[1], 12.5)
        + _chunks(short[2], 24.1)
        + _chunks(book.audio[3][: _secs(3.5)], 33.0)  # flushed at 36.5
        + _chunks(short[4], 37.5)  # the answer to the backchannel
        + _chunks(book.audio[5], 48.0)  # plays on to 54 s over the barge-in
    )
    report = analyse(
        Script(b"", cases, ()),
        place(played, book),
        _clock(70.0),  # type: ignore[arg-type]
        book,
        vad_stop_secs=0.2,
        decisions=[35.6],
        clears=[36.5],
    )
    assert report["cut_off_by_pause"] == {
        "0.7": {"n": 2, "cut_off": 1, "pct": 50.0},
        "1": {"n": 1, "cut_off": 1, "pct": 100.0},
        "none": {"n": 1, "cut_off": 0, "pct": 0.0},
    }
    assert report["cut_off_pct"] == 50.0
    assert report["backchannel_resumed_pct"] == 0.0
    assert report["backchannel_outcomes"] == {"stopped": 1}
    assert report["backchannel_answered"] == 1  # reply 4 came after it
    assert report["barge_in_answered"] == 0
    assert report["barge_in_missed"] == 1 and report["barge_in_p99_ms"] is None
    assert report["failed_cases"] == {"no_answer": [5], "barge_in_missed": [4]}
    assert report["cases"] == {"complete": 1, "pause": 3, "backchannel": 1, "barge_in": 1}
    assert report["ok"] is False
    assert targets_met(report) == {
        "cut_off_pct": False,
        "backchannel_resumed_pct": False,
        "barge_in_missed": False,
        "barge_in_p99_ms": False,
    }


def test_barge_in_latency_runs_from_the_decision_to_the_clear():
    book = _book(6.0, 6.0)
    cases = [
        Case(0, "barge_in", 1.0, 2.0, 15.0, over=4.0, over_end=6.0),
        Case(1, "barge_in", 16.0, 17.0, 30.0, over=19.0, over_end=21.0),
    ]
    played = _chunks(book.audio[0][: _secs(1.6)], 3.0) + _chunks(book.audio[1][: _secs(1.5)], 18.0)
    # Barge-in 0: decided at 4.6 s, cleared 3 ms later. Barge-in 1: the wire was cleared
    # (the bot paused) at 19.5 s, before the decision at 19.9 s: 0 ms.
    report = analyse(
        Script(b"", cases, ()),
        place(played, book),
        _clock(30.0),  # type: ignore[arg-type]
        book,
        vad_stop_secs=0.2,
        decisions=[4.6, 19.9],
        clears=[4.603, 19.5],
    )
    assert report["barge_in_missed"] == 0 and report["failures"] == {}
    assert report["barge_in_p99_ms"] == pytest.approx(3.0, abs=1e-6)
    assert report["barge_in_p50_ms"] == 0.0
    assert report["barge_in_stop_p50_ms"] == pytest.approx(500.0)  # 19.0 -> 19.5 s
    assert report["ok"] is True


@pytest.mark.slow
async def test_tiny_bench_sees_cut_offs_when_the_vad_stop_is_forced_short():
    from voxpipe.bench.turns import run_turns_bench
    from voxpipe.config.settings import VoxpipeSettings

    # No Smart Turn, a 0.2 s VAD stop: the bot answers inside every 0.7 s pause.
    settings = VoxpipeSettings(_env_file=None, turn_detection="vad", vad_stop_s=0.2)
    report = await run_turns_bench(
        1, settings=settings, kinds=("complete", "pause", "barge_in"), pauses=(0.7,)
    )
    assert report["cases"] == {"complete": 1, "pause": 1, "backchannel": 0, "barge_in": 1}
    assert report["cut_off_by_pause"]["0.7"] == {"n": 1, "cut_off": 1, "pct": 100.0}
    assert report["cut_off_by_pause"]["none"]["cut_off"] == 0
    assert report["cut_off_pct"] == 100.0
    assert report["barge_in_missed"] == 0
    assert report["barge_in_p99_ms"] is not None and 0 <= report["barge_in_p99_ms"] < 100
    assert 300 <= report["barge_in_stop_p50_ms"] < 1500  # VAD start + the guard's 0.4 s
    assert report["heard_unplaced_secs"] < 0.1  # every byte the caller heard was a reply's
    assert report["failures"] == {} and report["turn_detection"] == "vad"


def test_without_a_request_the_sweep_stands_for_the_decision_and_none_at_all_is_unbounded():
    book = _book(6.0)
    cases = [Case(0, "barge_in", 1.0, 2.0, 15.0, over=4.0, over_end=6.0)]
    played = _chunks(book.audio[0][: _secs(1.6)], 3.0)

    def p99(**times: list[float]) -> float | None:
        report = analyse(
            Script(b"", cases, ()),
            place(played, book),
            _clock(15.0),  # type: ignore[arg-type]
            book,
            vad_stop_secs=0.2,
            clears=[4.602],
            **times,
        )
        assert report["barge_in_missed"] == 0
        assert report["ok"] is (report["barge_in_p99_ms"] is not None)
        return report["barge_in_p99_ms"]

    assert p99(decisions=[], sweeps=[4.6]) == pytest.approx(2.0, abs=1e-6)
    assert p99(decisions=[4.599], sweeps=[4.6]) == pytest.approx(3.0, abs=1e-6)
    assert p99(decisions=[], sweeps=[]) is None  # stopped, but nothing decided: not measured


def test_cli_runs_the_served_call_with_the_options_and_refuses_bad_ones(monkeypatch, capsys):
    import json

    from voxpipe import cli
    from voxpipe.bench import turns

    seen: dict[str, object] = {}

    def fake_run(**kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        return {"cut_off_pct": 0.0, "ok": True, "case_log": ["#0"], "failed_cases": {}}

    monkeypatch.setattr(turns, "run_turns", fake_run)
    argv = ["bench", "turns", "--rounds", "2", "--provider-latency", "stt=100,llm=50,tts=20"]
    assert cli.main([*argv, "--json", "--loop", "asyncio"]) == 0
    assert json.loads(capsys.readouterr().out)["case_log"] == ["#0"]
    assert seen["rounds"] == 2 and seen["tune_gc"] is True and seen["loop"] == "asyncio"
    assert (seen["stt_latency"], seen["llm_first_token"], seen["tts_first_audio"]) == (
        0.1,
        0.05,
        0.02,
    )
    assert cli.main(argv[:4]) == 0
    assert "case_log" not in capsys.readouterr().out  # the table leaves the per-case lists out
    assert cli.main(["bench", "turns", "--rounds", "0"]) == 2
    assert "--rounds" in capsys.readouterr().err


def test_a_stall_before_the_stop_does_not_count_as_the_stop():
    book = _book(6.0)
    audio = book.audio[0]
    # Heard 0..2 s, a 0.1 s stall on the wire, then 2..3 s, then flushed for good.
    played = _chunks(audio[: _secs(2.0)], 0.0) + _chunks(audio[_secs(2.0) : _secs(3.0)], 2.1)
    verdict = follow_reply(place(played, book), 1.5, book, until=30.0)
    assert verdict.outcome == "stopped" and verdict.stopped_at == pytest.approx(3.1)
    assert verdict.silent_secs == pytest.approx(0.1)


def test_an_answer_still_playing_when_the_next_case_starts_is_a_script_failure_not_a_cut_off():
    book = _book(6.0, 1.5)
    cases = [
        Case(0, "complete", 1.0, 3.0, 8.0),
        Case(1, "pause", 8.0, 11.0, 16.0, pause=0.7, pause_start=9.0),
    ]
    # Case 0's answer runs from 4 s to 10 s, over case 1's paused sentence; case 1 answered
    # after its end.
    played = _chunks(book.audio[0], 4.0) + _chunks(book.audio[1], 12.0)
    report = analyse(
        Script(b"", cases, ()),
        place(played, book),
        _clock(16.0),  # type: ignore[arg-type]
        book,
        vad_stop_secs=0.2,
        decisions=[],
        clears=[],
    )
    assert report["cut_off_by_pause"]["0.7"] == {"n": 1, "cut_off": 0, "pct": 0.0}
    assert report["failed_cases"] == {"bot_talking_at_start": [1]}
    assert report["ok"] is False
