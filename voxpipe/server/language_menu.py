"""The IVR language menu of the Twilio voice webhook.

When the caller's country has more than one enabled language row in the locale table (Canada:
en-CA and fr-CA; Switzerland: de-CH, fr-CH and it-CH), or ``LANGUAGE_MENU=1``, the first
answer to the voice webhook is a ``<Gather numDigits="1">`` with one prompt per language, each
in its own language ("For English, press 1. Pour le français, appuyez sur 2."). Twilio posts
the key to the webhook again (``?language_menu=1:en-CA,2:fr-CA``, the offered choices, so the
answer is read against what the caller heard even if the table changed meanwhile); the chosen
locale goes to the stream as the ``locale`` parameter, which the call's locale choice reads
first. No key (or an unknown one) falls back to the first row of the menu.

With ``LANGUAGE_MENU=1`` a caller whose country has a single row hears the global menu: the
rows that have an ``ivr_digit``, each on its own key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from starlette.requests import Request
from starlette.responses import Response

from voxpipe.config.consent_policy import caller_country
from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.config.locales import LocaleRow

if TYPE_CHECKING:
    from voxpipe.server.app import ServerState

__all__ = ["MENU_PARAM", "language_menu", "menu_options", "menu_twiml"]

logger = logging.getLogger(__name__)

MENU_PARAM = "language_menu"


def menu_options(
    rows: Iterable[LocaleRow], *, country: str | None, caller: str | None, always: bool = False
) -> list[tuple[str, LocaleRow]]:
    """(key, row) pairs to offer, or [] when the caller gets no menu."""
    enabled = [r for r in rows if r.enabled]
    where = caller_country(enabled, country, caller)
    serving = sorted((r for r in enabled if where and where in r.countries), key=lambda r: r.locale)
    if len(serving) > 1:
        return [(str(n), row) for n, row in enumerate(serving[:9], start=1)]
    if always:
        keyed = sorted((r for r in enabled if r.ivr_digit), key=lambda r: str(r.ivr_digit))
        return [(str(r.ivr_digit), r) for r in keyed]
    return []


def prompt_for(key: str, row: LocaleRow) -> str:
    """ "For English, press 1." in the row's own language."""
    texts = LocaleTexts.for_locale(row.locale)
    if texts.translated("language_menu.option"):
        return texts.text("language_menu.option", digit=key)
    return texts.text("language_menu.other", language=row.locale, digit=key)


def menu_twiml(options: list[tuple[str, LocaleRow]], action: str, timeout_s: int = 5) -> str:
    """``<Gather>`` with one ``<Say>`` per language, then (no key) the action without Digits."""
    says = "".join(
        f"<Say language={quoteattr(row.locale)}>{escape(prompt_for(key, row))}</Say>"
        for key, row in options
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Gather numDigits="1" timeout="{int(timeout_s)}" method="POST" '
        f"action={quoteattr(action)}>{says}</Gather>"
        f'<Redirect method="POST">{escape(action)}</Redirect></Response>'
    )


def _offered(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in value.split(",")[:9]:
        key, _, locale = item.partition(":")
        if len(key) == 1 and locale and len(locale) <= 35:
            pairs.append((key, locale))
    return pairs


async def language_menu(
    request: Request, st: ServerState, fields: MutableMapping[str, str], params: dict[str, str]
) -> Response | None:
    """The menu's TwiML for a caller who should choose a language first, or None to go on
    streaming; on the menu's answer, sets ``params["locale"]`` to the chosen locale."""
    answered = params.pop(MENU_PARAM, None)
    if answered is not None:
        offered = _offered(answered)
        digit = (fields.get("Digits") or "").strip()
        chosen = dict(offered).get(digit) or (offered[0][1] if offered else None)
        if chosen:
            params["locale"] = chosen
            logger.info(
                "language menu: %s (%s)",
                chosen,
                f"key {digit}" if digit in dict(offered) else "no answer: the first row",
                extra={"call_id": fields.get("CallSid", "-")},
            )
        return None
    if params.get("locale"):
        return None  # the flow chose already (…/twilio/voice?locale=fr-CA)
    from voxpipe.config.shared_locales import shared_locale_table

    try:
        rows = (await shared_locale_table(st.settings)).rows_now()
    except Exception as exc:  # no menu rather than no call
        logger.warning("language menu skipped: locale table unavailable: %s", exc)
        return None
    options = menu_options(
        rows,
        country=fields.get("FromCountry"),
        caller=fields.get("From"),
        always=st.settings.language_menu,
    )
    if not options:
        return None
    from voxpipe.server.webhooks import TOKEN_PARAM, public_base

    query = {k: v for k, v in request.query_params.items() if k not in (TOKEN_PARAM, MENU_PARAM)}
    query[MENU_PARAM] = ",".join(f"{key}:{row.locale}" for key, row in options)
    action = f"{public_base(request, st.settings.public_url)}{request.url.path}?{urlencode(query)}"
    st.metrics.webhooks["twilio", "language-menu"] += 1
    return Response(
        menu_twiml(options, action, st.settings.language_menu_timeout_s),
        media_type="application/xml",
    )
