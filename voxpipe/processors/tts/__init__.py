"""Text-to-speech processors: ``base`` (sentences, ordering, word timing, interruption),
``elevenlabs`` (cloud, needs the 'elevenlabs' extra), ``espeak`` (offline, the 'offline'
extra), ``factory`` (pick one from settings). Vendor modules are imported only when used."""
