"""Transports: audio in and out of a call, over telephony websockets, WebRTC or files."""
