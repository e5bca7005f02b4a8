"""The `voxpipe` command: serve | call | replay | record | bench."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from voxpipe.bench.report import print_result


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


BENCHES: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "engine": ("engine: hop cost, throughput, idle session footprint", _bench_engine),
    "vad": ("vad: Silero window cost at batch 1 and batched, calls per core", _bench_vad),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxpipe", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from voxpipe.pipelines.logs import configure_logging

    configure_logging(args.log_level.upper())
    if args.command == "bench":
        title, fn = BENCHES[args.which]
        print_result(title, fn(args), as_json=args.json)
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
