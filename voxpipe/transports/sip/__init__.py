"""Direct SIP: a SIP user agent server (aiosipua) and RTP media (aiortp) for bot calls."""
