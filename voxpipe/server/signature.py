"""Twilio webhook signatures (``X-Twilio-Signature``): compute and check them.

The signature is base64(HMAC-SHA1(auth token, URL + each POST parameter sorted by name, as
name + value; a repeated name contributes each of its values, sorted)). Twilio is not
consistent about the port in the URL it signs, so a URL is accepted with or without it.

JSON bodies are signed differently: Twilio adds ``bodySHA256=<hex SHA-256 of the body>`` to the
URL's query and signs the URL alone (no parameters); the body must then hash to that value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = [
    "BODY_HASH_PARAM",
    "SIGNATURE_HEADER",
    "body_signature_matches",
    "compute_signature",
    "signature_matches",
    "url_variants",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
BODY_HASH_PARAM = "bodySHA256"

Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def _grouped(params: Params) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        out.setdefault(name, []).extend(values)
    return out


def compute_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a POST of ``params`` to ``url``."""
    parts = [url]
    grouped = _grouped(params)
    for name in sorted(grouped):
        # Twilio's own validator signs each distinct value once, in sorted order.
        for value in sorted(set(grouped[name])):
            parts.append(name + value)
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, without its port and with its default port (Twilio signs either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    out = [url]
    for netloc in (prefix + host, f"{prefix}{host}:{port}"):
        variant = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if variant not in out:
            out.append(variant)
    return out


def signature_matches(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """True when ``signature`` signs ``params`` posted to ``url`` (with or without its port)."""
    if not signature:
        return False
    given = signature.strip().encode("ascii", "replace")
    grouped = _grouped(params)
    ok = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, grouped).encode("ascii")
        # Every variant is compared so the time taken does not depend on which one matched.
        ok |= hmac.compare_digest(expected, given)
    return ok


def body_signature_matches(auth_token: str, url: str, body: bytes, signature: str | None) -> bool:
    """True when ``signature`` signs ``url`` (carrying ``bodySHA256``) and ``body`` hashes to it.

    The form Twilio uses for JSON bodies: the signature covers the URL with no parameters.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    declared = query.get(BODY_HASH_PARAM, [""])[0]
    if not declared:
        return False
    actual = hashlib.sha256(body).hexdigest()
    body_ok = hmac.compare_digest(actual.encode(), declared.lower().encode("ascii", "replace"))
    signed_ok = signature_matches(auth_token, url, (), signature)
    return body_ok and signed_ok
