"""A session store that keeps a call going when Redis goes away, and writes back when it returns."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voxpipe.state.background import BackgroundTask
from voxpipe.state.errors import SessionDataLostError, StoreUnavailableError
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Liveness, SessionState, SessionStore, Turn, merge_states

logger = logging.getLogger(__name__)

# Striped per-session locks: operations on one session stay ordered (and are not interleaved
# with its write-back) without a dict of locks that grows with every session ever seen.
_LOCK_STRIPES = 64
_MIN_RETRY_S = 0.05


class ResilientSessionStore:
    """Redis (or any shared store) mirrored in memory; on an outage it runs on the mirror.

    Every write goes to the primary and to an in-memory mirror. When the primary fails the
    failure is logged once, the call carries on against the mirror, and the touched sessions
    are marked dirty. A background task retries the primary every `retry_interval_s`; once it
    answers, each dirty session is written back whole (merged with what the primary holds if
    this worker never saw the session's earlier history), then the store is healthy again.

    A primary that answers but lost its data (a Redis restarted empty between two writes, seen
    by its generation check) is handled like a longer outage: every session this worker wrote
    is written back whole from the mirror, at once, instead of the next writes landing in the
    empty store as partial sessions.
    """

    def __init__(
        self,
        primary: SessionStore,
        mirror: MemorySessionStore | None = None,
        *,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._primary = primary
        if mirror is None:
            mirror = MemorySessionStore(
                ttl_s=getattr(primary, "ttl_s", 3600.0),
                max_turns=getattr(primary, "max_turns", 20),
            )
        self._mirror = mirror
        self.retry_interval_s = max(retry_interval_s, _MIN_RETRY_S)
        self._healthy = True
        self._healthy_event = asyncio.Event()
        self._healthy_event.set()
        # Sessions written only to the mirror since the primary failed.
        self._dirty: set[str] = set()
        # Sessions whose mirror holds their full stored history (loaded from or created via
        # this store); others must be merged with the primary's copy at write-back.
        self._complete: set[str] = set()
        # Sessions this worker wrote (its calls): what it writes back when the primary lost data.
        self._owned: set[str] = set()
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        self._reconcile_lock = asyncio.Lock()
        self._recovery = BackgroundTask(self._recover, "voxpipe-session-store-recovery")
        self._closed = False
        self.data_losses = 0

    @property
    def healthy(self) -> bool:
        """True when the primary is in use; False while running on the memory mirror."""
        return self._healthy

    @property
    def pending_sessions(self) -> int:
        """Sessions waiting to be written back to the primary."""
        return len(self._dirty)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(session_id.encode()) % _LOCK_STRIPES]

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the primary; if it is down, start degraded rather than fail the server."""
        try:
            await self._primary.start()
        except SessionDataLostError as exc:
            self._lost(exc)
            self._degrade(exc)
        except StoreUnavailableError as exc:
            self._degrade(exc)

    async def close(self) -> None:
        """Write back what is pending if the primary answers, then release everything."""
        self._closed = True
        await self._recovery.stop()
        if not self._healthy:
            await self.reconcile()
        if self._dirty:
            logger.error(
                "session store closed with %d session(s) never written back to the primary "
                "(it stayed unreachable): %s",
                len(self._dirty),
                ", ".join(sorted(self._dirty)[:20]),
            )
        await self._primary.close()

    async def wait_healthy(self, timeout: float | None = None) -> bool:
        """Wait until the primary is in use again; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._healthy_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- failure and recovery -----------------------------------------------------------------
    def _degrade(self, exc: BaseException) -> None:
        if self._healthy and not isinstance(exc, SessionDataLostError):  # _lost said it
            # Logged once per outage, not once per operation: a busy worker would flood the log.
            logger.warning(
                "session store unreachable, calls continue in memory and will be written back "
                "when it returns: %s",
                exc,
            )
        self._healthy = False
        self._healthy_event.clear()
        if not self._closed:
            self._recovery.start()  # no-op while it runs

    def _lost(self, exc: SessionDataLostError) -> None:
        """The primary lost its data: everything this worker wrote must be written back."""
        lost = {sid for sid in self._owned if self._mirror.has(sid)}
        self._dirty |= lost
        self.data_losses += 1
        logger.warning(
            "session store lost its data (%s): writing %d session(s) back from memory",
            exc,
            len(lost),
        )

    async def _recover(self) -> None:
        while not self._healthy:
            await asyncio.sleep(self.retry_interval_s)
            try:
                await self.reconcile()
            except Exception:
                # Nothing else restarts this loop while degraded: it must outlive any bug.
                logger.exception("session store write-back failed; retrying")

    async def reconcile(self) -> bool:
        """Try the primary now and write back every dirty session; True when healthy again."""
        if self._healthy:
            return True
        async with self._reconcile_lock:
            if self._healthy:
                return True
            try:
                try:
                    await self._primary.start()
                except SessionDataLostError as exc:
                    # It restarted empty during the outage: not only the dirty sessions are gone.
                    self._lost(exc)
                written = 0
                while self._dirty:
                    session_id = next(iter(self._dirty))
                    async with self._lock(session_id):
                        await self._write_back(session_id)
                        self._dirty.discard(session_id)
                    written += 1
            except StoreUnavailableError as exc:
                logger.debug("session store still unreachable: %s", exc)
                return False
            # No await between the emptiness check above and here: no write can slip in.
            self._healthy = True
            self._healthy_event.set()
            logger.warning(
                "session store reachable again: wrote back %d session(s) kept in memory", written
            )
            return True

    async def _write_back(self, session_id: str) -> None:
        state = await self._mirror.load(session_id)
        if state is None:
            # Deleted (or expired) while the primary was away.
            await self._primary.delete(session_id)
            return
        if session_id not in self._complete:
            stored = await self._primary.load(session_id)
            if stored is not None:
                state = merge_states(stored, state, self._mirror.max_turns)
                await self._mirror.save(state)
        await self._primary.save(state)
        self._complete.add(session_id)

    # --- operations ---------------------------------------------------------------------------
    async def _warm(self, session_id: str) -> None:
        """Make the mirror a full copy of the session before the first write through it."""
        if session_id in self._complete and self._mirror.has(session_id):
            return
        stored = await self._primary.load(session_id)
        if stored is not None:
            await self._mirror.save(stored)
        else:
            await self._mirror.delete(session_id)
        self._complete.add(session_id)
        if len(self._complete) > 4096 or len(self._owned) > 4096:
            live = set(await self._mirror.list_sessions())
            self._complete &= live
            self._owned &= live | {session_id}

    async def _write(self, session_id: str, op: Callable[[SessionStore], Awaitable[None]]) -> None:
        lost = False
        async with self._lock(session_id):
            self._owned.add(session_id)
            if self._healthy:
                try:
                    await self._warm(session_id)
                    await op(self._primary)
                    await op(self._mirror)
                    return
                except SessionDataLostError as exc:
                    lost = True
                    self._lost(exc)
                    self._degrade(exc)
                except StoreUnavailableError as exc:
                    self._degrade(exc)
            await op(self._mirror)
            self._dirty.add(session_id)
        if lost:
            # Write everything back now (outside the session's lock, which write-back takes).
            await self.reconcile()

    async def load(self, session_id: str) -> SessionState | None:
        lost = False
        async with self._lock(session_id):
            if self._healthy:
                try:
                    state = await self._primary.load(session_id)
                except SessionDataLostError as exc:
                    lost = True
                    self._lost(exc)
                    self._degrade(exc)
                except StoreUnavailableError as exc:
                    self._degrade(exc)
                else:
                    if state is not None:
                        await self._mirror.save(state)
                    else:
                        await self._mirror.delete(session_id)
                    self._complete.add(session_id)
                    return state
            state = await self._mirror.load(session_id)
        if lost:
            await self.reconcile()
        return state

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        await self._write(session_id, lambda store: store.append_turn(session_id, turn))

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        await self._write(session_id, lambda store: store.set_meta(session_id, values))

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        await self._write(session_id, lambda store: store.touch(session_id, worker_id))

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        # Not a write of conversation data: no warm-up, and never dirty (a write-back of a
        # session the mirror does not hold would delete it); the next beat refreshes liveness.
        lost = False
        async with self._lock(session_id):
            if self._healthy:
                try:
                    await self._primary.heartbeat(session_id, worker_id)
                    await self._mirror.heartbeat(session_id, worker_id)
                    return
                except SessionDataLostError as exc:
                    lost = True
                    self._lost(exc)
                    self._degrade(exc)
                except StoreUnavailableError as exc:
                    self._degrade(exc)
            await self._mirror.heartbeat(session_id, worker_id)
        if lost and await self.reconcile():
            # The beat that noticed the loss was refused: beat again into the restored store.
            await self.heartbeat(session_id, worker_id)

    async def liveness(self, session_id: str) -> Liveness | None:
        if self._healthy:
            try:
                return await self._primary.liveness(session_id)
            except StoreUnavailableError as exc:
                self._degrade(exc)
        return await self._mirror.liveness(session_id)

    async def save(self, state: SessionState) -> None:
        sid = state.session_id
        async with self._lock(sid):
            # A full replacement makes the mirror complete whatever it held before.
            self._complete.add(sid)
            self._owned.add(sid)
            await self._mirror.save(state)
            if self._healthy:
                try:
                    await self._primary.save(state)
                    return
                except StoreUnavailableError as exc:
                    self._degrade(exc)
            self._dirty.add(sid)

    async def delete(self, session_id: str) -> None:
        async with self._lock(session_id):
            await self._mirror.delete(session_id)
            self._owned.discard(session_id)
            # The mirror now knows the whole truth about this session: it has none.
            self._complete.add(session_id)
            if self._healthy:
                try:
                    await self._primary.delete(session_id)
                    self._complete.discard(session_id)
                    return
                except StoreUnavailableError as exc:
                    self._degrade(exc)
            self._dirty.add(session_id)

    async def list_sessions(self) -> list[str]:
        if self._healthy:
            try:
                return await self._primary.list_sessions()
            except StoreUnavailableError as exc:
                self._degrade(exc)
        return await self._mirror.list_sessions()

    async def stale_sessions(self, older_than_s: float, now: float | None = None) -> list[str]:
        if self._healthy:
            try:
                return await self._primary.stale_sessions(older_than_s, now)
            except StoreUnavailableError as exc:
                self._degrade(exc)
        return await self._mirror.stale_sessions(older_than_s, now)
