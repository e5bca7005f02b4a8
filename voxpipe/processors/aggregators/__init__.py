"""Context aggregators: the conversation context, and the processors that build it."""

from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.context import ContextEntry, LLMContext, Summarizer
from voxpipe.processors.aggregators.pair import LLMContextAggregatorPair
from voxpipe.processors.aggregators.user import UserContextAggregator

__all__ = [
    "AssistantContextAggregator",
    "ContextEntry",
    "LLMContext",
    "LLMContextAggregatorPair",
    "Summarizer",
    "UserContextAggregator",
]
