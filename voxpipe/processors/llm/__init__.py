"""LLM processors: the shared service logic, the OpenAI client and the scripted dialog "LLM".

``voxpipe.processors.llm.openai`` is imported on its own (it needs the 'openai' extra).
"""

from voxpipe.processors.llm.base import (
    ChatChunk,
    FunctionSpec,
    LLMProviderError,
    LLMService,
    ToolCall,
    ToolCallDelta,
)
from voxpipe.processors.llm.scripted import Intent, IntentMatch, ScriptedLLMService

__all__ = [
    "ChatChunk",
    "FunctionSpec",
    "Intent",
    "IntentMatch",
    "LLMProviderError",
    "LLMService",
    "ScriptedLLMService",
    "ToolCall",
    "ToolCallDelta",
]
