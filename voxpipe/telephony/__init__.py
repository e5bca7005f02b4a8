"""Carrier call control and the warm-transfer state machine (see DESIGN.md, "Growing the layout").

``twilio`` holds Twilio's call control over REST, ``twilio_transfer`` one warm-transfer attempt,
``transfers`` the live attempts of this worker and the settings they run with.
"""
