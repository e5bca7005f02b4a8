"""Protocol-faithful local fakes of the providers voxpipe talks to, for tests with no network.

Each fake is an asyncio server on 127.0.0.1 with an ephemeral port, used as an async context
manager in the test's own event loop; it speaks the provider's real wire protocol (so the
official SDK clients work against it), plays a script (replies, latencies, faults) and records
what clients sent::

    async with FakeDeepgram(utterances=[DeepgramUtterance("Hi.", start=0.2, end=0.6)]) as dg:
        ...  # point the client at dg.url, then assert on dg.connections
"""

from voxpipe.testing.fakes.deepgram import (
    DeepgramConnection,
    DeepgramFault,
    DeepgramHearing,
    DeepgramUtterance,
    DeepgramWord,
    FakeDeepgram,
)
from voxpipe.testing.fakes.elevenlabs import (
    ElevenLabsConnection,
    ElevenLabsFault,
    ElevenLabsHttpFault,
    ElevenLabsHttpRequest,
    FakeElevenLabs,
)
from voxpipe.testing.fakes.openai import FakeOpenAI, FakeReply, FakeToolCall, OpenAIRequest
from voxpipe.testing.fakes.twilio_rest import FakeCall, FakeTwilioREST, TwilioRequest

__all__ = [
    "DeepgramConnection",
    "DeepgramFault",
    "DeepgramHearing",
    "DeepgramUtterance",
    "DeepgramWord",
    "ElevenLabsConnection",
    "ElevenLabsFault",
    "ElevenLabsHttpFault",
    "ElevenLabsHttpRequest",
    "FakeCall",
    "FakeDeepgram",
    "FakeElevenLabs",
    "FakeOpenAI",
    "FakeReply",
    "FakeToolCall",
    "FakeTwilioREST",
    "OpenAIRequest",
    "TwilioRequest",
]
