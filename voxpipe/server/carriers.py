"""Which carriers the server offers, and how each one's call starts are authenticated.

A carrier is *served* (its webhook and media-stream routes exist) when it is listed in
``CARRIERS`` and either its verification secret is set (Twilio auth token, Telnyx public key,
Vonage signature secret: its webhooks are then checked and a bad one gets 403) or
``ALLOW_UNSIGNED_WEBHOOKS=1`` is set while the server binds to a loopback address (local
development: webhooks are taken unsigned, with a warning at start). A carrier that is not
served has no routes: its URLs answer 404 and start nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from voxpipe.config.settings import VoxpipeSettings

__all__ = ["CarrierAccess", "UnsafeSettingsError", "carrier_access", "is_loopback"]

logger = logging.getLogger(__name__)

# The setting that verifies each carrier's webhooks ("sip" has no webhook in this version).
SECRET_SETTING = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "telnyx": "TELNYX_PUBLIC_KEY",
    "vonage": "VONAGE_SIGNATURE_SECRET",
}


class UnsafeSettingsError(ValueError):
    """Settings the server refuses to start with (e.g. unsigned webhooks on a public address)."""


def is_loopback(host: str) -> bool:
    """True when ``host`` (an interface to bind) is reachable only from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


@dataclass(slots=True)
class CarrierAccess:
    """The carriers served, and the secret (or the development switch) each is served under."""

    twilio_auth_token: str | None = None
    telnyx_public_key: str | None = None
    vonage_signature_secret: str | None = None
    replay_window_s: float = 300.0
    # carrier -> "signed" (webhooks verified) or "unsigned" (ALLOW_UNSIGNED_WEBHOOKS on loopback)
    served: dict[str, str] = field(default_factory=dict)

    def serves(self, carrier: str) -> bool:
        """True when ``carrier``'s routes exist."""
        return carrier in self.served

    def signed(self, carrier: str) -> bool:
        """True when ``carrier``'s webhooks must carry a valid signature."""
        return self.served.get(carrier) == "signed"


def carrier_access(settings: VoxpipeSettings, host: str) -> CarrierAccess:
    """Decide which carriers to serve when binding to ``host``; log the decision.

    Raises UnsafeSettingsError when ALLOW_UNSIGNED_WEBHOOKS is set on a non-loopback address.
    """
    loopback = is_loopback(host)
    if settings.allow_unsigned_webhooks and not loopback:
        raise UnsafeSettingsError(
            f"ALLOW_UNSIGNED_WEBHOOKS=1 is refused when binding to {host} (not a loopback "
            "address): anyone could start calls. Unset it and set each carrier's secret "
            "(TWILIO_AUTH_TOKEN, TELNYX_PUBLIC_KEY, VONAGE_SIGNATURE_SECRET), or bind 127.0.0.1."
        )
    access = CarrierAccess(
        twilio_auth_token=(
            settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        ),
        telnyx_public_key=settings.telnyx_public_key,
        vonage_signature_secret=(
            settings.vonage_signature_secret.get_secret_value()
            if settings.vonage_signature_secret
            else None
        ),
        replay_window_s=settings.webhook_replay_window_s,
    )
    secrets = {
        "twilio": access.twilio_auth_token,
        "telnyx": access.telnyx_public_key,
        "vonage": access.vonage_signature_secret,
    }
    wanted = [c for c in settings.carriers.split(",") if c]
    off: list[str] = []
    for carrier in wanted:
        if carrier not in SECRET_SETTING:
            continue  # sip: no webhooks; its own server checks SIP_ALLOW and digest auth
        if secrets[carrier]:
            access.served[carrier] = "signed"
        elif settings.allow_unsigned_webhooks:
            access.served[carrier] = "unsigned"
        else:
            off.append(carrier)
    unsigned = [c for c, how in access.served.items() if how == "unsigned"]
    if unsigned:
        logger.warning(
            "ALLOW_UNSIGNED_WEBHOOKS=1: %s webhooks are accepted WITHOUT a signature (development "
            "only, bound to %s); anyone who can reach this port can start calls",
            ", ".join(unsigned),
            host,
        )
    if off:
        logger.warning(
            "carrier(s) %s not served (their routes answer 404): set %s, or "
            "ALLOW_UNSIGNED_WEBHOOKS=1 for local development",
            ", ".join(off),
            ", ".join(SECRET_SETTING[c] for c in off),
        )
    signed = [c for c, how in access.served.items() if how == "signed"]
    if signed:
        logger.info("carriers served with signed webhooks: %s", ", ".join(signed))
    return access
