"""The bot contract: what a bot receives (``Call``), what it returns, and how bot files are loaded.

A bot is one Python file exposing ``async def bot(call: Call) -> Pipeline`` (any
``FrameProcessor``, or a ready ``PipelineTask`` for full control). voxpipe calls it once per
call, after the carrier has said who is calling, and runs what it returns until the call ends::

    from voxpipe.call import Call
    from voxpipe.pipelines import Pipeline

    async def bot(call: Call) -> Pipeline:
        return Pipeline([call.transport.input(), MyProcessor(), call.transport.output()])
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.config.consent_policy import call_consent_policy
from voxpipe.config.locales import (
    CallLocaleHints,
    ConsentPolicy,
    LocaleRow,
    choose_locale,
    load_seed_rows,
)
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.pipelines.task import PipelineTask, TaskParams
from voxpipe.processors.base import FrameProcessor
from voxpipe.transports.protocol import Transport
from voxpipe.transports.wire import AudioFormat

__all__ = [
    "Bot",
    "BotLoadError",
    "Call",
    "CallLocale",
    "Transport",
    "build_task",
    "call_locale",
    "choose_call_locale",
    "load_bot",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Call:
    """One call as a bot sees it: the transport to put in the pipeline, and who is calling."""

    transport: Transport  # .input() / .output(): the processors that start and end the pipeline
    call_id: str
    settings: VoxpipeSettings
    carrier: str = "test"  # twilio | telnyx | vonage | webrtc | wav | replay
    caller: str = ""  # E.164 number of the caller when the carrier gives it
    called: str = ""  # the number that was dialled
    country: str | None = None  # ISO country of the caller (Twilio's FromCountry)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    locale: str = "en-US"
    locale_row: LocaleRow | None = None  # STT/TTS voice and greeting for ``locale``
    # How this caller consents to retention (ivr / notice / none), from CONSENT_MODE and the
    # locale table; None when the call was built without the server (the bot decides).
    consent_policy: ConsentPolicy | None = None
    audio_in: AudioFormat = field(default_factory=AudioFormat)  # the wire's formats
    audio_out: AudioFormat = field(default_factory=AudioFormat)
    allow_interruptions: bool = True
    # Set by the server per authenticated call start: the transcript stores accept this call
    # id's records only from this owner (a stream claiming the id of another call cannot
    # overwrite them). Empty outside the server.
    owner: str = ""
    # The carrier's call control where the bot may use it (SIP: ``SipCallControl`` for REFER
    # transfers); None on carriers whose call control goes through their REST API.
    control: Any = None
    # A maker of fresh media-stream URLs of this call (a new stream of the same call, e.g. for
    # a caller sent back to the bot after a transfer nobody took), where the carrier needs one
    # (Telnyx, Vonage) and PUBLIC_URL is set; None elsewhere.
    stream_url: Callable[[], str] | None = None

    def metadata(self) -> dict[str, Any]:
        """The metadata every processor sees in ``StartFrame.metadata`` (``voxpipe/frames.py``)."""
        return {
            "call_id": self.call_id,
            "carrier": self.carrier,
            "caller": self.caller,
            "called": self.called,
            "country": self.country,
            "locale": self.locale,
            "consent_policy": self.consent_policy,
            "custom_parameters": dict(self.custom_parameters),
            "audio_in_encoding": self.audio_in.encoding,
            "audio_out_encoding": self.audio_out.encoding,
            "owner": self.owner or None,
        }

    def task_params(self) -> TaskParams:
        """Task parameters for this call: the wire's sample rates and the metadata."""
        return TaskParams(
            audio_in_sample_rate=self.audio_in.sample_rate,
            audio_out_sample_rate=self.audio_out.sample_rate,
            allow_interruptions=self.allow_interruptions,
            metadata=self.metadata(),
        )


Bot = Callable[[Call], Awaitable[FrameProcessor | PipelineTask]]


class BotLoadError(RuntimeError):
    """A bot file that cannot be loaded, or a bot that returned something unusable."""


@functools.lru_cache(maxsize=1)
def _seed_rows() -> tuple[LocaleRow, ...]:
    return tuple(load_seed_rows())


def choose_call_locale(
    settings: VoxpipeSettings,
    *,
    caller: str = "",
    country: str | None = None,
    custom_parameters: dict[str, str] | None = None,
    rows: tuple[LocaleRow, ...] | None = None,
) -> LocaleRow:
    """The locale row for a call from its metadata, among ``rows`` (default: the shipped rows;
    the server uses ``call_locale``, which reads the database table)."""
    params = dict(custom_parameters or {})
    hints = CallLocaleHints.from_twilio(
        {"From": caller, "FromCountry": country or ""}, custom_parameters=params
    )
    return choose_locale(rows or _seed_rows(), hints, default=settings.default_locale).row


@dataclass(frozen=True, slots=True)
class CallLocale:
    """A call's locale row (None when none could be chosen) and its consent policy."""

    locale: str
    row: LocaleRow | None
    consent_policy: ConsentPolicy


async def call_locale(
    settings: VoxpipeSettings,
    *,
    carrier: str,
    caller: str = "",
    country: str | None = None,
    custom_parameters: dict[str, str] | None = None,
) -> CallLocale:
    """The locale and consent policy of a call, from the worker's locale table (the database,
    refreshed in the background; the shipped rows while it is unreachable). Never raises."""
    from voxpipe.config.shared_locales import shared_locale_table

    try:
        table = await shared_locale_table(settings)
        rows = table.rows_now()
        row: LocaleRow | None = choose_call_locale(
            settings,
            caller=caller,
            country=country,
            custom_parameters=custom_parameters,
            rows=tuple(r for r in rows if r.enabled) or _seed_rows(),
        )
    except Exception as exc:  # a broken locale table must not refuse calls
        logger.warning("locale choice failed, using %s: %s", settings.default_locale, exc)
        rows, row = _seed_rows(), None
    policy = call_consent_policy(
        settings.consent_mode, carrier=carrier, rows=rows, row=row, country=country, caller=caller
    )
    return CallLocale(row.locale if row else settings.default_locale, row, policy)


def load_bot(spec: str | Path) -> Bot:
    """The ``bot`` function of a bot file (``bots/echo.py``) or module (``pkg.mod[:func]``)."""
    text = str(spec)
    func_name = "bot"
    path = Path(text)
    if not text.endswith(".py") and ":" in text and not path.exists():
        text, func_name = text.rsplit(":", 1)
        path = Path(text)
    if text.endswith(".py") or path.exists():
        module = _load_file(path)
        where = str(path)
    else:
        try:
            module = importlib.import_module(text)
        except ImportError as exc:
            raise BotLoadError(
                f"cannot import bot module {text!r}: {exc}. Pass a bot file such as bots/echo.py"
            ) from exc
        where = text
    fn = getattr(module, func_name, None)
    if fn is None:
        found = sorted(
            n for n, v in vars(module).items() if inspect.iscoroutinefunction(v) and n[0] != "_"
        )
        hint = f" (async functions found: {', '.join(found)})" if found else ""
        raise BotLoadError(
            f"{where} has no function {func_name!r}: a bot file must define "
            f"`async def {func_name}(call: Call) -> Pipeline`{hint}"
        )
    if not inspect.iscoroutinefunction(fn):
        raise BotLoadError(
            f"{where}: {func_name} must be an async function (`async def {func_name}(call)`)"
        )
    return fn  # type: ignore[no-any-return]


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise BotLoadError(f"bot file {path} does not exist: pass the path to a .py file")
    name = f"voxpipe_bot_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise BotLoadError(f"{path} is not a Python file voxpipe can load")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise BotLoadError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        raise BotLoadError(f"{path} failed while loading: {type(exc).__name__}: {exc}") from exc
    return module


def build_task(call: Call, built: object, **task_kwargs: Any) -> PipelineTask:
    """A PipelineTask for what a bot returned (a processor/pipeline, or a task it built)."""
    if isinstance(built, PipelineTask):
        for key, value in call.metadata().items():
            built.params.metadata.setdefault(key, value)
        return built
    if isinstance(built, FrameProcessor):
        return PipelineTask(built, params=call.task_params(), call_id=call.call_id, **task_kwargs)
    raise BotLoadError(
        f"the bot returned {type(built).__name__}; it must return a Pipeline (or any "
        "FrameProcessor, or a PipelineTask)"
    )
