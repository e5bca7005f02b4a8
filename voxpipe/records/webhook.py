"""The call-end webhook: one signed JSON POST per call, from a durable spool, until a 2xx.

Signed per the Standard Webhooks specification: ``webhook-id`` (the same on every attempt, so
the receiver can drop duplicates), ``webhook-timestamp`` (seconds, of this attempt) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the secret given as
``whsec_<base64>``. Each call's message is written to ``<SPOOL_DIR>/webhooks`` (fsync, atomic
rename; sealed under the KEK when one is set) before any attempt, retried with exponential
backoff, and replaced by a ``delivered/<id>`` marker once a 2xx came back: a call stored twice
(sweeper, then its worker) is not delivered twice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from voxpipe.records.fields import RecordSealer, mask_number

# The escalation record's keys in the call's metadata (``voxpipe.telephony.handoff``).
ESCALATION_KEY = "escalation"
_RECORD_FIELDS = (
    "trigger",
    "outcome",
    "connected_to",
    "started_at",
    "on_hold_at",
    "ended_at",
    "hold_s",
    "message",
    "message_at",
)

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.crypto import TranscriptCipher
    from voxpipe.state.transcripts import Transcript

__all__ = ["CallEndWebhook", "decode_secret", "sign"]

logger = logging.getLogger(__name__)


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ValueError if malformed."""
    if not secret.startswith("whsec_"):
        raise ValueError("CALL_END_WEBHOOK_SECRET must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except ValueError as exc:
        raise ValueError("CALL_END_WEBHOOK_SECRET: the part after whsec_ is not base64") from exc
    if len(key) < 16:
        raise ValueError("CALL_END_WEBHOOK_SECRET: use at least 16 random bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class CallEndWebhook:
    """Builds, spools, signs and delivers call-end messages; ``start`` runs the sender."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        spool_dir: str | Path,
        *,
        sealer: RecordSealer,
        caller_mode: str = "hmac",
        max_backoff_s: float = 300.0,
        base_backoff_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self._key = secret
        self.dir = Path(spool_dir)
        self.delivered_dir = self.dir / "delivered"
        self.sealer = sealer
        self.caller_mode = caller_mode
        self.max_backoff_s = max_backoff_s
        self.base_backoff_s = base_backoff_s
        self.timeout_s = timeout_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls, settings: VoxpipeSettings, cipher: TranscriptCipher | None
    ) -> CallEndWebhook | None:
        """The webhook CALL_END_WEBHOOK_URL asks for, or None."""
        if not settings.call_end_webhook_url:
            return None
        try:
            if settings.call_end_webhook_secret is None:
                raise ValueError("CALL_END_WEBHOOK_URL is set: set CALL_END_WEBHOOK_SECRET too")
            key = decode_secret(settings.call_end_webhook_secret.get_secret_value())
        except ValueError as exc:
            # The server refuses these settings at start; elsewhere calls go on unreported.
            logger.error("call-end webhook disabled: %s", exc)
            return None
        return cls(
            settings.call_end_webhook_url,
            key,
            Path(settings.spool_dir) / "webhooks",
            sealer=RecordSealer(cipher),
            caller_mode=settings.call_end_webhook_caller,
            max_backoff_s=settings.call_end_webhook_max_backoff_s,
        )

    # --- messages -----------------------------------------------------------------------------
    @staticmethod
    def message_id(call_id: str) -> str:
        """One id per call, whoever stores it: retries and double stores share it."""
        return "msg_" + hashlib.sha256(b"call-end:" + call_id.encode()).hexdigest()[:32]

    def payload(self, t: Transcript) -> dict[str, Any]:
        """The JSON body (Standard Webhooks shape: type, timestamp, data)."""
        meta = dict(t.metadata)
        caller = (
            self.sealer.caller_hash(t.caller)
            if self.caller_mode == "hmac"
            else mask_number(t.caller)
        )
        outcome = (
            "escalated" if t.escalated else ("abandoned" if meta.get("swept") else "completed")
        )
        return {
            "type": "call.ended",
            "timestamp": _iso(t.ended_at),
            "data": {
                "call_id": t.call_id,
                "caller": caller,
                "caller_format": self.caller_mode,
                "locale": t.locale,
                "start": _iso(t.started_at),
                "end": _iso(t.ended_at),
                "duration_s": round(t.duration_s, 3),
                "turns": len(t.turns),
                "summary": meta.get("summary") or meta.get("escalation_summary"),
                "escalation": self._escalation(t, meta),
                "outcome": outcome,
                "consent": meta.get("consent"),
            },
        }

    def _number(self, number: str | None) -> str | None:
        """A phone number as this receiver may see it (CALL_END_WEBHOOK caller format)."""
        if not number:
            return None
        return (
            self.sealer.caller_hash(number) if self.caller_mode == "hmac" else mask_number(number)
        )

    def _escalation(self, t: Transcript, meta: dict[str, Any]) -> dict[str, Any] | None:
        """The escalation record (issue 11): why, what the agent was told, the trigger, the
        outcome (connected to which number, declined, no answer, caller hung up, message
        taken), each number tried and the timings; None when the call did not escalate."""
        record = meta.get(ESCALATION_KEY)
        record = dict(record) if isinstance(record, dict) else {}
        if not t.escalated and not record:
            return None
        out: dict[str, Any] = {
            "escalated": t.escalated,
            "reason": t.escalation_reason or record.get("reason"),
            "summary": meta.get("escalation_summary") or record.get("summary") or None,
        }
        for name in _RECORD_FIELDS:
            out[name] = record.get(name)
        out["attempts"] = [dict(a) for a in record.get("attempts") or [] if isinstance(a, dict)]
        # The callback number is the caller's number (or another they gave): same format.
        out["callback_number"] = self._number(record.get("callback_number"))
        return out

    def _path(self, msg_id: str) -> Path:
        return self.dir / f"{msg_id}.json"

    def delivered(self, call_id: str) -> bool:
        """True once the receiver answered 2xx to this call's message."""
        return (self.delivered_dir / self.message_id(call_id)).exists()

    def pending(self) -> int:
        """Messages waiting for a 2xx."""
        return sum(1 for _ in self.dir.glob("msg_*.json")) if self.dir.is_dir() else 0

    async def enqueue(self, t: Transcript) -> None:
        """Spool the call's message durably (skipped once delivered), then wake the sender."""
        msg_id = self.message_id(t.call_id)
        body = json.dumps(self.payload(t), separators=(",", ":")).encode()
        await asyncio.to_thread(self._spool, msg_id, t.call_id, body)
        self._wake.set()

    def _spool(self, msg_id: str, call_id: str, body: bytes) -> None:
        self.delivered_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (self.delivered_dir / msg_id).exists():
            return
        cipher = self.sealer.cipher
        stored = cipher.seal(body, call_id, "webhook") if cipher is not None else body
        record = {
            "id": msg_id,
            "call_id": call_id,
            "sealed": cipher is not None,
            "body": base64.b64encode(stored).decode(),
            "attempts": 0,
            "next_at": 0.0,
        }
        _write_atomic(self._path(msg_id), json.dumps(record).encode())

    # --- delivery -----------------------------------------------------------------------------
    async def deliver_due(self, now: float | None = None) -> int:
        """Attempt every spooled message that is due at ``now``; returns how many were delivered."""
        now = time.time() if now is None else now
        delivered = 0
        async with self._lock:
            paths = sorted(self.dir.glob("msg_*.json")) if self.dir.is_dir() else []
            for path in paths:
                try:
                    record = json.loads(await asyncio.to_thread(path.read_bytes))
                except (OSError, ValueError):
                    continue
                if float(record.get("next_at", 0)) > now:
                    continue
                if await self._attempt(path, record, now):
                    delivered += 1
        return delivered

    async def _attempt(self, path: Path, record: dict[str, Any], now: float) -> bool:
        msg_id = str(record["id"])
        stored = base64.b64decode(record["body"])
        if record.get("sealed"):
            if self.sealer.cipher is None:
                logger.error("webhook %s is sealed and no KEK is set: left spooled", msg_id)
                return False
            body = self.sealer.cipher.open(stored, str(record["call_id"]), "webhook")
        else:
            body = stored
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self._key, msg_id, ts, body),
        }
        status: int | str
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self.timeout_s)
            response = await self._client.post(self.url, content=body, headers=headers)
            status = response.status_code
        except Exception as exc:  # any failure (network, a bad URL) is retried with backoff
            status = f"{type(exc).__name__}: {exc}"
        if isinstance(status, int) and 200 <= status < 300:
            await asyncio.to_thread(self._mark_delivered, path, msg_id)
            logger.info("call-end webhook %s delivered", msg_id)
            return True
        attempts = int(record.get("attempts", 0)) + 1
        backoff = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempts - 1))
        record.update(attempts=attempts, next_at=now + backoff * random.uniform(0.8, 1.0))
        await asyncio.to_thread(_write_atomic, path, json.dumps(record).encode())
        logger.warning(
            "call-end webhook %s not accepted (%s), attempt %d; retrying in %.0f s",
            msg_id,
            status,
            attempts,
            backoff,
        )
        return False

    def _mark_delivered(self, path: Path, msg_id: str) -> None:
        # The marker first: a crash between the two leaves a delivered message that is not
        # re-sent, never a sent one without its marker (which would be sent again).
        marker = self.delivered_dir / msg_id
        self.delivered_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(marker, str(time.time()).encode())
        path.unlink(missing_ok=True)
        _fsync_dir(self.dir)

    def next_due(self) -> float | None:
        """The earliest ``next_at`` among spooled messages (None when none)."""
        times = []
        for path in self.dir.glob("msg_*.json") if self.dir.is_dir() else []:
            try:
                times.append(float(json.loads(path.read_bytes()).get("next_at", 0)))
            except (OSError, ValueError):
                continue
        return min(times) if times else None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Run the sender in the background (messages left by a previous run go first)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="voxpipe-call-end-webhook"
            )
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        while True:
            due = await asyncio.to_thread(self.next_due)
            wait = self.max_backoff_s if due is None else max(0.0, due - time.time())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:  # a bug here must not end delivery for the life of the process
                logger.exception("call-end webhook delivery failed; retrying later")
