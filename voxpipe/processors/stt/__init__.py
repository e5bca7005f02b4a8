"""Speech-to-text processors: ``base`` (shared behaviour), ``deepgram`` (cloud, needs the
'deepgram' extra), ``pocketsphinx`` (offline, the 'offline' extra), ``factory`` (pick one from
settings). Vendor modules are imported only when used."""
