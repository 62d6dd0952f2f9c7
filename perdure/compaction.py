"""Context-window compaction: which messages leave the context, and what the summary says.

Pure planning, no I/O: the caller counts tokens (one count per message, system first) and
runs the summarizer; these functions only decide. That keeps them safe to call inside a
Temporal workflow and makes every plan reproducible on replay (same inputs, same plan).

Evicted messages leave the in-context list only; they stay in the database, searchable with
`conversation_search`. Behaviour follows Letta v3 (sliding window at 30% + 10% steps, `all`
as the fallback, hard eviction when even that is too big) with fixes for issues 2605 (a cut
between a tool call and its return), 3242 (estimates built from prompt + completion) and
3270 (a sliding window that wipes the whole context).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from perdure.schemas.messages import Message

CompactionMode = Literal["all", "sliding_window", "hard_eviction"]
CLIP_MARKER = "... [summary truncated to fit]"


class CompactionPlan(BaseModel):
    """What to do with the context: the ids to drop and the ids that stay after the system message."""

    mode: CompactionMode
    evict_ids: list[str]
    """Messages leaving the context (they stay in the database), oldest first."""
    keep_ids: list[str]
    """Messages kept after the system message, in order; the summary goes before them."""
    tokens_before: int
    tokens_after_estimate: int
    """System message + kept messages, excluding the summary still to be written."""


def _check(messages: Sequence[Message], counts: Sequence[int]) -> None:
    """Reject inputs a plan cannot be built from, rather than producing a silently wrong plan."""
    if not messages or messages[0].role != "system":
        raise ValueError("messages must start with the system message")
    if len(messages) != len(counts):
        raise ValueError(f"{len(messages)} messages but {len(counts)} token counts")


def _pending_approval(messages: Sequence[Message]) -> tuple[int, int] | None:
    """(first protected index, approval request index) of an unanswered approval request, else None.

    The request must stay in context until answered: the answer is validated against it, and
    the tool returns must follow the assistant message of the same step that made the calls.
    """
    for index in range(len(messages) - 1, 0, -1):
        request = messages[index]
        if request.role != "approval" or not request.tool_calls:
            continue
        call_ids = {call.id for call in request.tool_calls}
        for later in messages[index + 1 :]:
            answered = {a.tool_call_id for a in later.approvals} | {r.tool_call_id for r in later.tool_returns}
            if answered & call_ids:
                return None
        for before in range(index - 1, 0, -1):
            candidate = messages[before]
            if candidate.role == "assistant" and candidate.step_id is not None and candidate.step_id == request.step_id:
                return before, index
        return index, index
    return None


def _safe_cuts(messages: Sequence[Message]) -> list[int]:
    """Indices `i` where `messages[1:i]` may be evicted and `messages[i:]` kept, ascending.

    A cut goes only right before an assistant message or a user message, i.e. at the start of a
    model response or of a turn, and never where a kept tool return or approval answer refers to
    an evicted call (Letta issue 2605: a call trimmed without its return crashes the provider).
    """
    call_index: dict[str, int] = {}
    for index, message in enumerate(messages):
        for call in message.tool_calls:
            call_index.setdefault(call.id, index)
    # earliest[i]: the oldest message holding a call that messages[i:] answer.
    earliest = [len(messages)] * (len(messages) + 1)
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        refs = [r.tool_call_id for r in message.tool_returns] + [a.tool_call_id for a in message.approvals]
        owners = [call_index[ref] for ref in refs if call_index.get(ref, index) < index]
        earliest[index] = min([earliest[index + 1], *owners])
    return [
        index
        for index in range(2, len(messages))
        if messages[index].role in ("assistant", "user") and earliest[index] >= index
    ]


def _protected(messages: Sequence[Message]) -> list[int]:
    """The pending approval request and the assistant message of its step: all that survives `all`."""
    pending = _pending_approval(messages)
    return sorted(set(pending)) if pending else []


def _plan(
    mode: CompactionMode,
    messages: Sequence[Message],
    counts: Sequence[int],
    keep: Sequence[int],
) -> CompactionPlan:
    """Build a plan that keeps the system message and the `keep` indices and evicts the rest."""
    kept = set(keep)
    return CompactionPlan(
        mode=mode,
        evict_ids=[m.id for i, m in enumerate(messages) if i > 0 and i not in kept],
        keep_ids=[messages[i].id for i in sorted(kept)],
        tokens_before=sum(counts),
        tokens_after_estimate=counts[0] + sum(counts[i] for i in kept),
    )


def plan_sliding_window(
    messages: Sequence[Message],
    counts: Sequence[int],
    window: int,
    *,
    keep_fraction: float = 0.7,
    step: float = 0.1,
) -> CompactionPlan | None:
    """Evict the oldest messages until the system message + the rest fit `keep_fraction * window`.

    Starts by evicting the oldest `1 - keep_fraction` (30%) of the non-system messages and grows
    by `step` (10%) until the goal is met, so a small overshoot never wipes the whole context
    (Letta issue 3270). Each target is moved back to the nearest safe cut (see `_safe_cuts`) that
    keeps any pending approval. Returns None when no safe cut reaches the goal: the caller then
    falls back to `plan_all`.
    """
    _check(messages, counts)
    if not 0 < keep_fraction < 1 or step <= 0:
        raise ValueError("keep_fraction must be in (0, 1) and step positive")
    body = len(messages) - 1
    pending = _pending_approval(messages)
    limit = pending[0] if pending else len(messages)
    cuts = [cut for cut in _safe_cuts(messages) if cut <= limit]
    goal = keep_fraction * window
    steps = 0
    while True:
        fraction = min(1.0, round(1 - keep_fraction + steps * step, 9))
        target = 1 + int(fraction * body + 0.5)
        usable = [cut for cut in cuts if cut <= target]
        if usable:
            cut = usable[-1]
            if counts[0] + sum(counts[cut:]) <= goal:
                return _plan("sliding_window", messages, counts, range(cut, len(messages)))
        if fraction >= 1.0:
            return None
        steps += 1


def plan_all(messages: Sequence[Message], counts: Sequence[int]) -> CompactionPlan:
    """Evict everything except the system message and an unanswered approval request (+ its assistant message)."""
    _check(messages, counts)
    return _plan("all", messages, counts, _protected(messages))


def plan_hard_eviction(messages: Sequence[Message], counts: Sequence[int]) -> CompactionPlan:
    """The `all` set, for when even a summary would not fit: the caller then writes no summary message."""
    _check(messages, counts)
    return _plan("hard_eviction", messages, counts, _protected(messages))


def needs_compaction(next_request_tokens: int, window: int, threshold: float = 0.9) -> bool:
    """True when the next request would go past `threshold` of the window (Letta: 90% for all models)."""
    return next_request_tokens > int(window * threshold)


def estimate_next_request(last_prompt_tokens: int | None, added_tokens: int, counted_context_tokens: int) -> int:
    """The size of the next request: the last call's prompt plus what the step added to the context.

    Letta used prompt + completion totals (issue 3242), which overcounts whatever the completion
    did not add (reasoning, discarded text) and triggers needless compactions. Providers that
    report no usage (llama.cpp: None or 0) get the caller's own count of the context instead.
    """
    if last_prompt_tokens is None or last_prompt_tokens <= 0:
        return counted_context_tokens
    return last_prompt_tokens + added_tokens


def system_prompt_overflows(system_tokens: int, tools_tokens: int, window: int) -> bool:
    """True when the system prompt and tool definitions alone fill the window: no compaction can help."""
    return system_tokens + tools_tokens >= window


SUMMARY_PROMPT = """\
You are summarizing the oldest part of a conversation between a user and an AI agent. These \
messages are being removed from the agent's context window; your summary replaces them, so \
the agent must be able to continue the work from it alone.

Keep, in plain text:
- the user's goals and requests, and whether each was met;
- facts learned: names, numbers, file paths, identifiers, tool results that still matter;
- decisions made and the reasons for them, including errors and how they were fixed;
- the current state of the work;
- the next step the agent was about to take, if any.

Write from the agent's point of view, in plain text without headings or markdown. Do not \
continue the conversation, do not answer the user and do not call tools. Keep the summary \
under {limit_words} words."""


def summary_request_messages(evicted_text: str, limit_words: int) -> list[dict[str, str]]:
    """The chat messages for the summarizer model: the instruction, then the evicted transcript."""
    return [
        {"role": "system", "content": SUMMARY_PROMPT.format(limit_words=limit_words)},
        {
            "role": "user",
            "content": f"<transcript>\n{evicted_text}\n</transcript>\n\nWrite the summary of the transcript above.",
        },
    ]


def clip_summary(text: str, limit_chars: int) -> str:
    """Cut a summary to at most `limit_chars`, ending with a visible marker so the agent knows it was cut."""
    if len(text) <= limit_chars:
        return text
    if limit_chars <= len(CLIP_MARKER):
        return CLIP_MARKER[: max(limit_chars, 0)]
    return text[: limit_chars - len(CLIP_MARKER)].rstrip() + CLIP_MARKER


def summary_message_text(summary: str, evicted_count: int) -> str:
    """The summary message placed right after the system message, telling the agent where the rest went."""
    noun, verb, pronoun = ("message", "was", "It is") if evicted_count == 1 else ("messages", "were", "They are")
    return (
        f"Note: {evicted_count} earlier {noun} of this conversation {verb} moved out of the context window to "
        f"save space. {pronoun} still stored and can be found with conversation_search.\n"
        f"Summary:\n{summary.strip()}"
    )
