"""Call records (issue 12): envelope encryption, sealed metadata, retention, the hash-chained
audit log, the records API under ``/api/``, the call-end webhook and the compliance profile.

Modules are imported where used; ``voxpipe.records.envelope`` needs only ``cryptography``.
"""
