"""Strict readers for the JSON and base64 that telephony websockets carry (shared by serializers).

Every check raises ``WireProtocolError`` with a message that says what was wrong, so the
receive loop can log it with the call id and skip the message.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from voxpipe.transports.wire import WireProtocolError

# One message never needs more: a second of 16 kHz PCM16 base64-encoded is ~43 KB.
MAX_MESSAGE_CHARS = 64 * 1024
# Largest decoded media payload accepted in one message (1 s of 16 kHz PCM16).
MAX_MEDIA_BYTES = 32000
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


def load_object(message: str | bytes) -> dict[str, Any]:
    """The JSON object in a text message."""
    if isinstance(message, bytes | bytearray | memoryview):
        raise WireProtocolError(f"unexpected binary message ({len(message)} bytes)")
    if not isinstance(message, str):
        raise WireProtocolError(f"unexpected message type {type(message).__name__}")
    if len(message) > MAX_MESSAGE_CHARS:
        raise WireProtocolError(f"message of {len(message)} characters exceeds {MAX_MESSAGE_CHARS}")
    try:
        data = json.loads(message)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise WireProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireProtocolError(f"expected a JSON object, got {type(data).__name__}")
    return data


def get_obj(data: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    """``data[key]`` as an object (empty when absent and not required)."""
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise WireProtocolError(f"{key!r} must be an object, got {type(value).__name__}")
    return value


def get_str(data: dict[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    """``data[key]`` as a string (numbers are accepted and turned into strings)."""
    value = data.get(key)
    if value is None:
        if required:
            raise WireProtocolError(f"missing {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WireProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    return str(value)


def get_int(data: dict[str, Any], key: str, default: int) -> int:
    """``data[key]`` as an int (strings of digits accepted), ``default`` when absent."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise WireProtocolError(f"{key!r} must be a number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise WireProtocolError(f"{key!r} must be a number, got {value!r:.40}")


def string_map(value: Any, key: str) -> dict[str, str]:
    """A flat ``{str: str}`` from a JSON object (scalar values turned into strings)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireProtocolError(f"{key!r} must be an object, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, str):
            out[str(k)] = v
        elif isinstance(v, bool | int | float):
            out[str(k)] = json.dumps(v)
        elif v is None:
            out[str(k)] = ""
        else:
            raise WireProtocolError(f"{key}.{k} must be a scalar, got {type(v).__name__}")
    return out


def decode_payload(payload: Any, *, sample_width: int = 1) -> bytes:
    """Base64 audio: non-empty, valid, at most ``MAX_MEDIA_BYTES``, whole samples."""
    if not isinstance(payload, str):
        raise WireProtocolError(
            f"media payload must be a base64 string, got {type(payload).__name__}"
        )
    if len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
        raise WireProtocolError(f"media payload of {len(payload)} characters is too large")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireProtocolError(f"media payload is not valid base64: {exc}") from None
    check_audio_length(audio, sample_width)
    return audio


def check_audio_length(audio: bytes, sample_width: int) -> None:
    """Raise unless ``audio`` is a non-empty whole number of samples within the size limit."""
    if not audio:
        raise WireProtocolError("empty media payload")
    if len(audio) > MAX_MEDIA_BYTES:
        raise WireProtocolError(f"media payload of {len(audio)} bytes exceeds {MAX_MEDIA_BYTES}")
    if len(audio) % sample_width:
        raise WireProtocolError(
            f"media payload of {len(audio)} bytes is not a whole number of {sample_width}-byte samples"
        )


def check_digit(digit: str) -> str:
    """A single DTMF key, upper-cased."""
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise WireProtocolError(f"invalid DTMF digit {digit!r:.20}")
    return digit.upper()


def b64(audio: bytes) -> str:
    """Base64 text of ``audio``."""
    return base64.b64encode(audio).decode("ascii")
