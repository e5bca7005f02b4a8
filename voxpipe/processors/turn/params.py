"""A call's turn-taking, built in one place from the settings for every way a call runs.

Served calls (every carrier, SIP, WebRTC), ``voxpipe call``, replays, scenarios and the
benchmarks all take their VAD and end-of-turn parameters from ``turn_taking(settings)``, so
what a benchmark measures is what a caller gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from voxpipe.processors.vad.analyzer import VADParams

if TYPE_CHECKING:
    from voxpipe.config.locales import LocaleRow
    from voxpipe.config.settings import VoxpipeSettings

__all__ = [
    "SMART_VAD_STOP_S",
    "VAD_ONLY_STOP_S",
    "TurnParams",
    "transport_turn_kwargs",
    "turn_taking",
]

SMART_VAD_STOP_S = 0.2  # the short silence after which Smart Turn is asked
VAD_ONLY_STOP_S = 0.8  # without the model: long enough for a pause between sentences


@dataclass(slots=True, frozen=True)
class TurnParams:
    """How the end of a caller's turn is decided after the VAD reports a silence.

    ``mode`` ``smart``: at the VAD's (short) stop, the Smart Turn model reads the utterance; a
    probability at or above ``complete_threshold`` ends the turn at once, below it the turn
    stays open until the caller speaks again (the same turn goes on) or ``max_wait_secs`` of
    silence have passed since their last speech. ``vad``: the VAD's stop ends the turn.
    ``preemptive``: a reply may be prepared from the words heard when the caller goes quiet,
    held until the turn is confirmed (``voxpipe.processors.turn.preemptive``).
    ``shed_after_secs``: when a decision would wait longer than this for the worker's
    inference thread (an overloaded worker), the model is skipped and the turn ends after
    ``VAD_ONLY_STOP_S`` of silence instead, as without the model (0: never skip).
    """

    mode: Literal["smart", "vad"] = "smart"
    max_wait_secs: float = 2.0
    complete_threshold: float = 0.5
    preemptive: bool = True
    shed_after_secs: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("smart", "vad"):
            raise ValueError(f"TurnParams.mode must be smart or vad, got {self.mode!r}")
        if self.max_wait_secs <= 0:
            raise ValueError("TurnParams.max_wait_secs must be > 0")
        if self.shed_after_secs < 0:
            raise ValueError("TurnParams.shed_after_secs must be >= 0")


def turn_taking(
    settings: VoxpipeSettings, row: LocaleRow | None = None
) -> tuple[VADParams, TurnParams]:
    """The VAD and end-of-turn parameters a call runs with under ``settings``, where the
    call's locale ``row`` sets a value (its turn columns) that value instead."""

    def pick(name: str) -> Any:
        value = getattr(row, name, None) if row is not None else None
        return getattr(settings, name) if value is None else value

    mode = pick("turn_detection")
    stop = pick("vad_stop_s")
    if stop is None:
        stop = SMART_VAD_STOP_S if mode == "smart" else VAD_ONLY_STOP_S
    vad = VADParams(
        confidence=pick("vad_confidence"),
        start_secs=pick("vad_start_s"),
        stop_secs=stop,
        min_volume=pick("vad_min_volume"),
    )
    turn = TurnParams(
        mode=mode,
        max_wait_secs=max(pick("turn_max_wait_s"), stop),
        complete_threshold=settings.turn_complete_threshold,
        preemptive=settings.preemptive_replies,
        shed_after_secs=settings.turn_shed_after_s,
    )
    return vad, turn


def transport_turn_kwargs(
    settings: VoxpipeSettings, row: LocaleRow | None = None
) -> dict[str, Any]:
    """``TransportParams`` keyword arguments for the call's turn-taking."""
    vad, turn = turn_taking(settings, row)
    return {"vad_params": vad, "turn": turn}
