"""The checks a media stream passes before its call starts, and the identity it gets.

A stream presents the token its carrier's (verified) webhook handed out. The token is redeemed
once; it names the call id the signed webhook gave (Twilio's CallSid, Telnyx's
call_control_id, Vonage's uuid) and the caller's numbers. The stream's own start message must
name the same call id: a stream claiming another call's id is closed and logged as a security
event. Where the carrier gave no id, the server made one and the call is stored under it. The
caller number the bot sees (and uses for consent and locale) is the webhook's, never the
stream's. Each call start also gets a fresh ``owner``: the transcript stores accept writes of a
call id only from the owner that first wrote it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voxpipe.server.security_events import security_event
from voxpipe.server.tokens import StreamTokenError
from voxpipe.transports.websocket import CLOSE_POLICY
from voxpipe.transports.wire import WireStart

if TYPE_CHECKING:
    from voxpipe.server.state import ServerState

__all__ = ["CARRIER_CALL_ID_PARAM", "StreamRefused", "authenticate_start"]

# Custom parameter holding the carrier's own id when the call is stored under a server-made one.
CARRIER_CALL_ID_PARAM = "carrier_call_id"


class StreamRefused(Exception):
    """A stream that may not start a call: close it with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric = metric  # the calls_refused label


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """Who a started call is, as the authenticated webhook said."""

    call_id: str
    caller: str
    called: str
    country: str
    owner: str  # random per call start: the only writer of this call's records


def _new_owner() -> str:
    return secrets.token_hex(16)


async def authenticate_start(
    st: ServerState, carrier: str, start: WireStart, token: str | None, client: str
) -> CallIdentity:
    """Redeem the stream's token and bind the call to it; rewrites ``start`` to match.

    Raises StreamRefused (after logging a security event) when the stream may not start.
    """
    params = dict(start.custom_parameters)
    if not st.require_stream_token:
        # Tests and embedded uses that start streams directly: the start message is believed.
        identity = CallIdentity(
            call_id=start.call_id,
            caller=start.caller,
            called=start.called,
            country=params.get("FromCountry", ""),
            owner=_new_owner(),
        )
        return identity
    try:
        grant = await st.tokens.redeem(token, carrier)
    except StreamTokenError as exc:
        security_event(
            "bad_token", client, f"{carrier} stream refused: {exc}", call_id=start.call_id or None
        )
        raise StreamRefused(CLOSE_POLICY, f"stream refused: {exc}", "bad-token") from exc
    if grant.carrier_signed and start.call_id != grant.call_id:
        security_event(
            "claimed_call_id",
            client,
            f"{carrier} stream's start names call {start.call_id[:80]!r} but its token was "
            f"issued for {grant.call_id!r}",
            call_id=grant.call_id,
        )
        raise StreamRefused(
            CLOSE_POLICY, "stream refused: call id does not match its stream token", "claimed-id"
        )
    if not grant.carrier_signed and start.call_id and start.call_id != grant.call_id:
        params[CARRIER_CALL_ID_PARAM] = start.call_id
    identity = CallIdentity(
        call_id=grant.call_id,
        caller=grant.caller,
        called=grant.called,
        country=grant.country,
        owner=_new_owner(),
    )
    # What the stream says about the numbers is not trusted: the webhook's values replace it.
    for name, value in (
        ("From", identity.caller),
        ("To", identity.called),
        ("FromCountry", identity.country),
    ):
        if value:
            params[name] = value
        else:
            params.pop(name, None)
    start.call_id = identity.call_id
    start.caller = identity.caller
    start.called = identity.called
    start.custom_parameters = params
    return identity
