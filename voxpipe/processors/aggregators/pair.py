"""LLMContextAggregatorPair: the user and assistant aggregators of one shared context."""

from __future__ import annotations

from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.aggregators.user import UserContextAggregator


class LLMContextAggregatorPair:
    """Builds both aggregators on one ``LLMContext``: put ``user()`` before the LLM and
    ``assistant()`` after the output transport."""

    def __init__(
        self,
        context: LLMContext,
        *,
        transcript_timeout_s: float = 1.0,
        idle_delay_s: float = 0.5,
    ) -> None:
        self.context = context
        self._user = UserContextAggregator(
            context, transcript_timeout_s=transcript_timeout_s, idle_delay_s=idle_delay_s
        )
        self._assistant = AssistantContextAggregator(context)

    def user(self) -> UserContextAggregator:
        return self._user

    def assistant(self) -> AssistantContextAggregator:
        return self._assistant
