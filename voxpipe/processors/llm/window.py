"""The context window's cap on a message list, for requests built outside ``LLMContext``."""

from __future__ import annotations

from typing import Any

__all__ = ["cap_messages"]


def cap_messages(messages: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """``messages`` (system first, then the conversation) with at most ``limit`` conversation
    messages, oldest dropped first; an assistant message that calls tools counts once with its
    results and leaves with them. For the follow-up request of a tool round, which adds the
    reply's own call and results to a window already at the cap."""
    head = 0
    while head < len(messages) and messages[head].get("role") == "system":
        head += 1
    units: list[list[dict[str, Any]]] = []
    for m in messages[head:]:
        if m.get("role") == "tool" and units:
            units[-1].append(m)
        else:
            units.append([m])
    if len(units) <= limit:
        return messages
    return messages[:head] + [m for unit in units[len(units) - limit :] for m in unit]
