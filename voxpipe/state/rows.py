"""How a transcript's turns are stored in a row: JSON bytes, sealed when a key is set."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from voxpipe.state.errors import TranscriptKeyError
from voxpipe.state.session import Turn

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher


def seal_turns(
    turns: list[Turn], call_id: str, cipher: TranscriptCipher | None
) -> tuple[bytes, bool, str | None]:
    """(payload, encrypted, key_id) for the `turns`, `encrypted`, `key_id` columns."""
    plain = json.dumps([t.to_dict() for t in turns], separators=(",", ":")).encode()
    if cipher is None:
        return plain, False, None
    return cipher.seal(plain, call_id), True, cipher.key_id


def open_turns(
    payload: bytes,
    encrypted: bool,
    key_id: str | None,
    call_id: str,
    cipher: TranscriptCipher | None,
) -> list[Turn]:
    """Inverse of `seal_turns`; says which key is needed when it cannot decrypt."""
    if encrypted:
        if cipher is None:
            raise TranscriptKeyError(
                f"transcript {call_id} is encrypted (key id {key_id}): set TRANSCRIPT_KEY to "
                "the key it was written with to read it."
            )
        payload = cipher.open(payload, call_id)
    return [Turn.from_dict(t) for t in json.loads(payload)]
