"""The `voxpipe` command: serve | call | replay | new | test | bench | records."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voxpipe.bench.report import print_result

logger = logging.getLogger("voxpipe.cli")


class CommandError(Exception):
    """A user-facing error: printed as `voxpipe: error: ...` with exit status 2."""


# ---------------------------------------------------------------------------- bench


def _bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.engine import run_engine_bench

    return asyncio.run(
        run_engine_bench(
            n_frames=args.frames, n_sessions=args.sessions, with_pipecat=not args.no_pipecat
        )
    )


def _bench_vad(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.vad import run_vad_bench

    return run_vad_bench()


def _bench_turn(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.turn import run_turn_bench

    return run_turn_bench()


def _bench_calls(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.calls import bot_needs_providers, run_calls_bench
    from voxpipe.bench.server_proc import DEFAULT_BOT

    providers = args.providers
    if providers == "auto":
        providers = "fakes" if bot_needs_providers(args.bot or DEFAULT_BOT) else "none"
    latency = {
        {"stt_latency": "stt", "llm_first_token": "llm", "tts_first_audio": "tts"}[k]: v
        for k, v in _provider_latency(args.provider_latency).items()
    }
    try:
        return run_calls_bench(
            calls=args.calls or (20 if providers == "fakes" else 200),
            seconds=20.0 if args.seconds is None else args.seconds,
            bot=args.bot,
            ramp_s=args.ramp,
            workers=args.workers,
            providers=providers,
            provider_latency=latency,
            pipecat=False if args.no_pipecat else None,
            progress=None if args.json else _progress,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _bench_leak(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.leak import run_leak_bench

    try:
        return run_leak_bench(
            calls=args.calls or 1000,
            lanes=args.lanes,
            bot=args.bot,
            progress=None if args.json else _progress,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _bench_soak(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.soak import run_soak_bench

    try:
        return run_soak_bench(
            calls=args.calls or 100,
            minutes=args.minutes,
            call_seconds=60.0 if args.seconds is None else args.seconds,
            window_s=args.window,
            bot=args.bot,
            progress=None if args.json else _progress,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _bench_interruption(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.interruption import run_interruption_bench

    return run_interruption_bench(n=args.n, mode=args.interruption_mode)


def _bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.latency import loop_factory, run_latency

    try:
        loop_factory(args.loop)
    except ValueError as exc:  # --loop uvloop without uvloop installed
        raise CommandError(str(exc)) from exc
    latencies = _provider_latency(args.provider_latency)
    # As `voxpipe serve` runs a call: on uvloop when installed, the GC tuned, its settings.
    result = run_latency(
        turns=args.turns, loop=args.loop, tune_gc=True, settings=_settings(), **latencies
    )
    return {k: v for k, v in result.items() if not isinstance(v, list)}


def _bench_turns(args: argparse.Namespace) -> dict[str, Any]:
    from voxpipe.bench.latency import loop_factory
    from voxpipe.bench.turns import run_turns

    if args.rounds < 1:
        raise CommandError(f"--rounds must be at least 1, got {args.rounds}")
    try:
        loop_factory(args.loop)
    except ValueError as exc:  # --loop uvloop without uvloop installed
        raise CommandError(str(exc)) from exc
    latencies = _provider_latency(args.provider_latency)
    # As `voxpipe serve` runs a call: on uvloop when installed, the GC tuned, its settings.
    result = run_turns(
        rounds=args.rounds, loop=args.loop, tune_gc=True, settings=_settings(), **latencies
    )
    return {k: v for k, v in result.items() if k not in ("failed_cases", "case_log") or args.json}


_PROVIDER_KEYS = {"stt": "stt_latency", "llm": "llm_first_token", "tts": "tts_first_audio"}


def _provider_latency(value: str) -> dict[str, float]:
    """``stt=150,llm=200,tts=150`` (ms) -> run_latency_bench keyword arguments (seconds)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, sep, ms = part.partition("=")
        key = _PROVIDER_KEYS.get(name.strip().lower())
        try:
            seconds = float(ms) / 1000.0 if sep else -1.0
        except ValueError:
            seconds = -1.0
        if key is None or seconds < 0:
            raise CommandError(
                f"--provider-latency: bad item {part!r}; expected stt=MS,llm=MS,tts=MS "
                "(milliseconds, e.g. stt=150,llm=200,tts=150)"
            )
        out[key] = seconds
    return out


BENCHES: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "engine": ("engine: hop cost, throughput, idle session footprint", _bench_engine),
    "vad": ("vad: Silero window cost at batch 1 and batched, calls per core", _bench_vad),
    "calls": (
        "calls: simulated Twilio callers against a served bot (echo, or --bot with provider "
        "stand-ins and Pipecat side by side)",
        _bench_calls,
    ),
    "interruption": ("interruption: onset VAD window to flush on the wire", _bench_interruption),
    "latency": ("latency: voice-to-voice on the provider fakes", _bench_latency),
    "turn": ("turn: Smart Turn cost per decision, one at a time and batched", _bench_turn),
    "leak": ("leak: calls back to back in one worker, its RSS growth", _bench_leak),
    "turns": ("turns: cut-offs in pauses, backchannels, barge-ins, by what is heard", _bench_turns),
    "soak": ("soak: N calls kept up for minutes, RSS and lateness per window", _bench_soak),
}


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print a table (or --json)")
    p.add_argument("which", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--frames", type=int, default=20000, help="frames for throughput benches")
    p.add_argument(
        "--sessions", type=int, default=100, help="idle sessions for the footprint bench"
    )
    p.add_argument("--no-pipecat", action="store_true", help="skip the Pipecat comparison")
    p.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls: concurrent simulated callers (200; 20 for a bot with provider stand-ins); "
        "leak: calls in all (1000)",
    )
    p.add_argument("--lanes", type=int, default=1, help="leak: calls at a time (1: sequential)")
    p.add_argument(
        "--workers", type=int, default=1, help="calls: serve with `voxpipe serve --workers N`"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="calls, soak: length of each call (calls: 20, soak: 60)",
    )
    p.add_argument("--ramp", type=float, default=5.0, help="calls: seconds to start them all")
    p.add_argument("--bot", default=None, help="calls: bot file to serve (default bots/echo.py)")
    p.add_argument("--minutes", type=float, default=30.0, help="soak: how long to keep calls up")
    p.add_argument("--window", type=float, default=60.0, help="soak: seconds per sample window")
    p.add_argument(
        "--providers",
        choices=("auto", "fakes", "none"),
        default="auto",
        help="calls: provider stand-ins in their own process and conversations (fakes; auto: "
        "for a bot that builds STT/LLM/TTS services), or echo-style calls (none)",
    )
    p.add_argument("--n", type=int, default=100, help="interruption: barge-ins to measure")
    p.add_argument(
        "--interruption-mode",
        choices=("smart", "immediate"),
        default="smart",
        help="interruption: smart (the served INTERRUPTION_MODE default: words decide, or the "
        "VAD after BACKCHANNEL_MAX_S) or immediate (the VAD guard alone)",
    )
    p.add_argument("--turns", type=int, default=20, help="latency: caller turns to measure")
    p.add_argument(
        "--rounds", type=int, default=3, help="turns: rounds of the caller script (~80 s each)"
    )
    p.add_argument(
        "--provider-latency",
        default="stt=150,llm=200,tts=150",
        help="latency, turns, calls --bot: provider stand-in latencies in ms (STT final, LLM "
        "first token, TTS first audio)",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="latency, turns: event loop for the call (auto: uvloop when installed, as serve)",
    )


# ---------------------------------------------------------------------------- serve


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the phone/websocket server for a bot")
    p.add_argument("bot", help="bot file, e.g. bots/echo.py")
    p.add_argument("--host", default=None, help="interface to bind (default HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default PORT or 8000)")
    p.add_argument("--record", metavar="DIR", default=None, help="record every call's frames here")
    p.add_argument("--public-url", default=None, help="public https URL (default PUBLIC_URL)")
    p.add_argument(
        "--sip", metavar="HOST:PORT", default=None, help="also take SIP calls here (SIP_LISTEN)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on the one port (default WORKERS, else one per CPU core)",
    )


def _banner(args: argparse.Namespace, settings: Any, host: str, port: int, workers: int) -> None:
    from voxpipe.server.access import WebRTCAccess
    from voxpipe.server.carriers import UnsafeSettingsError, carrier_access

    try:
        served = carrier_access(settings, host)
    except UnsafeSettingsError as exc:
        raise CommandError(str(exc)) from exc
    webrtc = WebRTCAccess.resolve(
        settings.webrtc,
        settings.webrtc_token.get_secret_value() if settings.webrtc_token else None,
        host,
    )
    record = args.record or settings.record_dir
    base = settings.public_url or f"http://{host}:{port}"
    banner = (
        f"voxpipe: serving {args.bot} on http://{host}:{port}"
        + (f" with {workers} workers" if workers > 1 else ""),
        (
            f"  Twilio voice webhook: {base}/twilio/voice"
            if served.serves("twilio")
            else "  Twilio: not served (set TWILIO_AUTH_TOKEN)"
        )
        + (f"; browser calls at {base}/" if webrtc.mode != "off" else "")
        + (f"; recording calls to {record}" if record else ""),
    ) + ((f"  SIP: {settings.sip_listen} (udp, tcp)",) if settings.sip_listen else ())
    _level, fmt = _logging_choice(args)
    if fmt == "json":  # every line on stderr is then a JSON object, the banner too
        for line in banner:
            logger.warning(line.strip())
    else:
        print("\n".join(banner), file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    from voxpipe.server.workers import default_worker_count

    # The bind address is a setting so the app knows whether it is reachable from outside.
    settings = _settings(public_url=args.public_url, host=args.host, sip_listen=args.sip)
    workers = args.workers if args.workers is not None else settings.workers
    workers = workers or default_worker_count()
    if workers < 1:
        raise CommandError(f"--workers must be at least 1, not {workers}")
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    if workers == 1:
        return _serve_one(args, settings, host)
    return _serve_many(args, settings, host, port, workers)


def _serve_one(args: argparse.Namespace, settings: Any, host: str) -> int:
    from voxpipe.server.app import create_app
    from voxpipe.server.carriers import UnsafeSettingsError
    from voxpipe.server.run import (
        DrainingServer,
        limit_native_threads,
        tune_gc,
        uvicorn_config,
    )

    record = args.record or settings.record_dir
    # The app decides what is open (WebRTC, unsigned webhooks) from where it listens.
    try:
        app = create_app(_bot_path(args.bot), settings, record_dir=record, host=host)
    except UnsafeSettingsError as exc:
        raise CommandError(str(exc)) from exc
    level, _fmt = _logging_choice(args)
    config = uvicorn_config(app, settings, host=host, port=args.port, log_level=level.lower())
    _banner(args, settings, host, config.port, 1)
    tune_gc()
    limit_native_threads()
    try:
        DrainingServer(config, drain=app.state.voxpipe.capacity.drain).run()
    finally:
        _stop_leftover_threads()
    return 0


def _stop_leftover_threads() -> None:
    """After the server stopped: stop store threads its shutdown did not get to close.

    A second exit signal cancels the app's shutdown halfway; the SQLite connections it had not
    closed keep non-daemon threads, and the process would wait for them forever at exit (the
    supervisor then gives up on the worker only after DRAIN_TIMEOUT_S + 60 s).
    """
    from voxpipe.state.sqlite_store import stop_connection_threads

    stopped = stop_connection_threads()
    if stopped:
        logging.getLogger("voxpipe.server").warning(
            "%d SQLite connection(s) were still open at exit: stopped (autocommit: nothing lost)",
            stopped,
        )


def _serve_many(args: argparse.Namespace, settings: Any, host: str, port: int, workers: int) -> int:
    import os
    import secrets

    from voxpipe.call import load_bot
    from voxpipe.records.compliance import check_compliance
    from voxpipe.server.carriers import UnsafeSettingsError, carrier_access
    from voxpipe.server.workers import Supervisor, reuseport_socket

    # What would stop every worker at start is refused here, once, with the usual message
    # (the carriers first: a refusal is the one line printed, before any warning).
    try:
        carrier_access(settings, host)
        check_compliance(settings, args.record or settings.record_dir)
    except UnsafeSettingsError as exc:
        raise CommandError(str(exc)) from exc
    load_bot(_bot_path(args.bot))  # BotLoadError: a bad bot file
    _banner(args, settings, host, port, workers)  # also refuses unsafe carrier settings
    _port_is_free(host, port)
    reserved = None
    if port == 0:
        # Every worker must bind the same port: pick it here and hold it (bound, not listening).
        reserved = reuseport_socket(host, 0, listen=False)
        port = reserved.getsockname()[1]
        print(f"voxpipe: listening on port {port}", file=sys.stderr)
    if settings.stream_token_secret is None and settings.twilio_auth_token is None:
        # A stream token issued by one worker must open a stream on any other.
        os.environ["STREAM_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    if not settings.redis_url:
        logger.warning(
            "%d workers without REDIS_URL: each worker remembers used stream tokens on its own",
            workers,
        )
    spec = {
        "bot": _bot_path(args.bot),
        "record": args.record or settings.record_dir,
        "overrides": {"public_url": args.public_url, "host": args.host, "sip_listen": args.sip},
        "log": _logging_choice(args),
        "host": host,
        "port": port,
        "workers": workers,
    }
    supervisor = Supervisor(
        workers, _serve_worker, (spec,), stop_timeout_s=settings.drain_timeout_s + 60.0
    )
    try:
        return supervisor.run()
    finally:
        if reserved is not None:
            reserved.close()


def _port_is_free(host: str, port: int) -> None:
    """Refuse a port some server already listens on: SO_REUSEPORT would silently share it."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _serve_worker(spec: dict[str, Any], index: int, run_dir: str) -> None:
    """One worker process of `voxpipe serve --workers N` (started by the supervisor)."""
    import os
    import signal
    import threading

    from voxpipe.logs import configure_logging
    from voxpipe.server.app import create_app
    from voxpipe.server.capacity import COUNT_ENV, INDEX_ENV, RUN_DIR_ENV
    from voxpipe.server.run import (
        DrainingServer,
        limit_native_threads,
        tune_gc,
        uvicorn_config,
    )
    from voxpipe.server.workers import reuseport_socket, unix_socket

    os.setpgrp()  # Ctrl-C reaches the supervisor only, which tells each worker once
    os.environ[INDEX_ENV] = str(index)
    os.environ[COUNT_ENV] = str(spec["workers"])
    os.environ[RUN_DIR_ENV] = run_dir
    configure_logging(*spec["log"])
    settings = _settings(**spec["overrides"])
    if index:  # one SIP user agent per server: worker 0's
        settings = settings.model_copy(update={"sip_listen": None})
    app = create_app(spec["bot"], settings, record_dir=spec["record"], host=spec["host"])
    level = spec["log"][0].lower()
    config = uvicorn_config(app, settings, host=spec["host"], port=spec["port"], log_level=level)
    sockets = [
        reuseport_socket(spec["host"], spec["port"]),
        unix_socket(Path(run_dir) / f"worker-{index}.sock"),
    ]
    server = DrainingServer(config, drain=app.state.voxpipe.capacity.drain)
    parent = os.getppid()

    def orphaned() -> None:
        # The supervisor was killed (SIGKILL, OOM): drain and stop rather than serve forever.
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        server.handle_exit(signal.SIGTERM, None)

    threading.Thread(target=orphaned, daemon=True, name="orphan-watch").start()
    tune_gc()
    limit_native_threads()
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # a second Ctrl-C, re-raised by uvicorn after its shutdown
        pass
    finally:
        _stop_leftover_threads()


# ---------------------------------------------------------------------------- call


def _add_call(sub: Any) -> None:
    p = sub.add_parser(
        "call", help="run one call from a WAV file through a bot (virtual clock, no phone)"
    )
    p.add_argument("bot", help="bot file, e.g. bots/echo.py")
    p.add_argument("--wav", required=True, help="the caller's side of the call (WAV file)")
    p.add_argument("--out", default=None, help="write what the caller heard to this WAV")
    p.add_argument("--transcript", default=None, help="write the transcript (JSON) here")
    p.add_argument(
        "--settle", type=float, default=2.0, help="seconds of quiet after which the call ends"
    )
    p.add_argument("--max-tail", type=float, default=30.0, help="longest wait after the WAV ends")


def _call(args: argparse.Namespace) -> int:
    from voxpipe.call import load_bot
    from voxpipe.testing.bot_runs import run_wav_call

    wav = Path(args.wav)
    if not wav.is_file():
        raise CommandError(f"WAV file {wav} does not exist: pass the caller's recording with --wav")
    bot = load_bot(_bot_path(args.bot))
    try:
        out = run_wav_call(
            bot,
            wav,
            settings=_settings(),
            output_wav=args.out,
            transcript_path=args.transcript,
            bot_name=args.bot,
            settle_secs=args.settle,
            max_tail_secs=args.max_tail,
            progress=_progress,
        )
    except (ValueError, EOFError) as exc:  # unreadable WAV and the like
        raise CommandError(f"{wav}: {exc}") from exc
    doc = out.transcript
    print(
        f"call of {doc['call_seconds']:.1f} s: caller spoke {doc['user_turns']} time(s), bot "
        f"{doc['bot_seconds']:.1f} s in {doc['bot_turns']} turn(s), "
        f"{len(doc['interruptions'])} interruption(s); ended: {doc['end_reason']}"
    )
    for text in doc["transcripts"]:
        print(f"  caller: {text}")
    for text in doc["replies"]:
        print(f"  bot:    {text}")
    if out.output_wav:
        print(f"wrote {out.output_wav}")
    if out.transcript_path:
        print(f"wrote {out.transcript_path}")
    return 0


# ---------------------------------------------------------------------------- new


def _add_new(sub: Any) -> None:
    p = sub.add_parser("new", help="write a starter bot with one tool and its scenario file")
    p.add_argument("path", help="the bot file to create, e.g. bots/my_bot.py")


def _new(args: argparse.Namespace) -> int:
    from voxpipe.scaffold import ScaffoldError, new_bot

    try:
        made = new_bot(args.path)
    except ScaffoldError as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {made.bot} (a bot with one tool) and {made.scenario} (its scenario)")
    print(f"  try it:  voxpipe test {made.scenario}")
    print(f"  serve:   voxpipe serve {made.bot}")
    return 0


# ---------------------------------------------------------------------------- replay


def _add_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a recorded call through a bot and check it")
    p.add_argument("recording", help="a recording written by `voxpipe serve --record DIR`")
    p.add_argument("--bot", default=None, help="bot file (default: the one that was recorded)")
    p.add_argument("--golden", default=None, help="expected summary (JSON); mismatch exits 1")
    p.add_argument("--write-golden", default=None, help="write the summary as a golden file")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    p.add_argument(
        "--offline",
        action="store_true",
        help="play the recorded provider results instead of calling the providers (no keys)",
    )


def _replay(args: argparse.Namespace) -> int:
    from voxpipe.call import load_bot
    from voxpipe.testing.bot_runs import recording_bot, replay_recording
    from voxpipe.testing.recording import RecordingError
    from voxpipe.testing.summary import compare_summaries

    path = Path(args.recording)
    if not path.is_file():
        raise CommandError(f"recording {path} does not exist")
    bot_spec = args.bot or recording_bot(path, _settings())
    if not bot_spec:
        raise CommandError(f"{path} does not name its bot: pass --bot BOT.py")
    golden: Any = None
    if args.golden:
        gpath = Path(args.golden)
        if not gpath.is_file():
            raise CommandError(
                f"golden file {gpath} does not exist: create it with --write-golden {gpath}"
            )
        try:
            golden = json.loads(gpath.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CommandError(f"golden file {gpath} is not valid JSON: {exc}") from exc
    bot = load_bot(_bot_path(bot_spec))
    try:
        result = replay_recording(
            path, bot, settings=_settings(), progress=_progress, offline=args.offline
        )
    except RecordingError as exc:
        raise CommandError(str(exc)) from exc
    summary = result.summary
    if args.write_golden:
        Path(args.write_golden).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.write_golden}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"replayed {result.frames} frames: {summary['user_turns']} caller turn(s), "
            f"{summary['bot_turns']} bot turn(s), {len(summary['interruptions'])} "
            f"interruption(s), bot audio {summary['audio']['seconds']:.2f} s"
        )
        for text in summary["transcripts"]:
            print(f"  caller: {text}")
        for text in summary["replies"]:
            print(f"  bot:    {text}")
    if golden is not None:
        diffs = compare_summaries(golden, summary)
        if diffs:
            print(f"MISMATCH against {args.golden}: {len(diffs)} difference(s)", file=sys.stderr)
            for d in diffs[:40]:
                print(f"  {d}", file=sys.stderr)
            return 1
        print(f"matches {args.golden}")
    return 0


# ---------------------------------------------------------------------------- test


def _add_test(sub: Any) -> None:
    p = sub.add_parser(
        "test", help="run scenario files (YAML) against their bots, offline and deterministic"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or directories")
    p.add_argument(
        "--audio",
        action="store_true",
        help="speak the caller's turns with the offline TTS through the VAD and STT",
    )
    p.add_argument("--junit", metavar="FILE", default=None, help="write a JUnit XML report")
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="scenarios to run at once (processes)"
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="use the configured providers (keys from the settings) on the real clock",
    )


def _test(args: argparse.Namespace) -> int:
    from voxpipe.testing.scenario import ScenarioResult
    from voxpipe.testing.scenario_junit import write_junit
    from voxpipe.testing.scenario_suite import run_suite

    if args.jobs < 1:
        raise CommandError("--jobs must be at least 1")
    _settings()  # bad settings are one clear error, before any scenario runs

    def show(result: ScenarioResult) -> None:
        print(result.report(), flush=True)

    suite = run_suite(args.paths, audio=args.audio, live=args.live, jobs=args.jobs, on_result=show)
    for _, problems in suite.invalid:
        for line in problems:
            print(f"voxpipe: error: {line}", file=sys.stderr)
    if args.junit:
        write_junit(args.junit, suite.results, suite.invalid)
    if suite.invalid:
        return 2
    if not suite.results:
        raise CommandError(f"no scenario files (*.yaml, *.yml) in {' '.join(args.paths)}")
    print(f"{suite.passed} passed, {suite.failed} failed")
    return 1 if suite.failed else 0


# ---------------------------------------------------------------------------- common


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from voxpipe.config.settings import VoxpipeSettings, get_settings

    try:
        settings = get_settings()
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        raise CommandError(f"invalid settings: {exc}") from exc
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        settings = VoxpipeSettings(**{**settings.model_dump(), **given})
    return settings


def _logging_choice(args: argparse.Namespace) -> tuple[str, str]:
    """(level, format): the flags win; else LOG_LEVEL / LOG_FORMAT.

    A server logs its call lines at INFO by default; the one-shot commands (call, replay,
    bench) print their own results and stay at WARNING unless LOG_LEVEL says otherwise.
    """
    level: str | None = args.log_level
    fmt: str | None = args.log_format
    if level is None or fmt is None:
        from voxpipe.config.settings import get_settings

        try:
            settings = get_settings()
        except Exception:  # reported by the command itself when it reads the settings
            settings = None
        if level is None:
            if settings is None:
                level = "INFO" if args.command == "serve" else "WARNING"
            elif args.command == "serve" or "log_level" in settings.model_fields_set:
                level = settings.log_level
            else:
                level = "WARNING"
        if fmt is None:
            fmt = settings.log_format if settings is not None else "text"
    return level, fmt


def _bot_path(spec: str) -> str:
    # A bare name finds the bot under bots/ ("echo" -> bots/echo.py).
    if not spec.endswith(".py") and ":" not in spec and "." not in spec:
        candidate = Path("bots") / f"{spec}.py"
        if candidate.is_file():
            return str(candidate)
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxpipe", description=__doc__)
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="logging level (default LOG_LEVEL: INFO for serve; WARNING for the other "
        "commands unless LOG_LEVEL is set)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        choices=("text", "json"),
        help="log lines as text or one JSON object per line (default LOG_FORMAT, text)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_call(sub)
    _add_replay(sub)
    _add_new(sub)
    _add_bench(sub)
    _add_test(sub)
    from voxpipe.records.cli import add_records_parser

    add_records_parser(sub)
    return parser


def _records(args: argparse.Namespace) -> int:
    from voxpipe.records.cli import run_records

    return run_records(args, _settings())


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "call": _call,
    "replay": _replay,
    "new": _new,
    "records": _records,
    "test": _test,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from voxpipe.call import BotLoadError
    from voxpipe.logs import configure_logging

    configure_logging(*_logging_choice(args))
    try:
        if args.command == "bench":
            title, fn = BENCHES[args.which]
            if args.which in {"calls", "leak", "soak", "latency", "turns"}:
                # The callers (or the call itself) run here: no spinning BLAS thread taking
                # the server's core, as in a served process.
                from voxpipe.server.run import limit_native_threads

                limit_native_threads()
            result = fn(args)
            print_result(title, result, as_json=args.json)
            return 1 if result.get("ok") is False else 0  # a bench that saw failures says so
        return COMMANDS[args.command](args)
    except (CommandError, BotLoadError) as exc:
        print(f"voxpipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
