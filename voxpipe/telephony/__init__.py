"""Carrier call control and the warm-transfer state machine (see DESIGN.md, "Growing the layout").

``warm_transfer`` is the carrier-neutral warm transfer (hold, dial, brief, connect on 1, next
number, back to the bot); ``twilio_transfer``, ``telnyx_transfer`` and ``vonage_transfer`` run it
on each carrier's REST API (``twilio``, ``telnyx_calls``, ``vonage_calls``); ``handoff`` and
``carrier_handoffs`` are the bot's side; ``transfers`` the live attempts of this worker and the
settings they share; ``sip_transfer`` a REFER on a direct SIP call.
"""
