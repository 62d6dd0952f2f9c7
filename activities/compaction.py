"""The compaction activity: take old messages out of the context, keep a summary in their place.

It loads the context itself, plans with `perdure.compaction`, asks the agent's model for a
summary, and swaps the in-context ids with a compare-and-set. Evicted messages stay in the
database, where `conversation_search` still finds them. A regular activity: the summary is an
LLM call, so it heartbeats and Temporal retries it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import not_found
from activities.llm import LLMActivities, offered_tool_schemas, provider_of
from activities.metrics import record_llm_usage
from activities.provider_calls import provider_call
from perdure.compaction import (
    CompactionPlan,
    clip_summary,
    plan_all,
    plan_hard_eviction,
    plan_sliding_window,
    summary_message_text,
    summary_request_messages,
    system_prompt_overflows,
)
from perdure.providers.base import ChatRequest
from perdure.providers.openai_format import to_openai_messages
from perdure.tools.returns import tool_return_cap
from perdure.schemas.agent import AgentState
from perdure.schemas.messages import Message, TextContent
from perdure.schemas.run import CompactInput, CompactOutput, TokenUsage
from perdure.store import agents, messages
from perdure.store.db import Database
from perdure.store.errors import NotFoundError
from perdure.tokens import count_message, count_tools
from perdure.tools.registry import get_tool_defs
from perdure import names

SUMMARY_WORDS = 250
TRANSCRIPT_PIECE_CHARS = 2_000


class CompactionActivities:
    def __init__(self, db: Database, llm: LLMActivities) -> None:
        """`llm` is the worker's own LLM activities: summaries go to the same providers."""
        self._db = db
        self._llm = llm

    @activity.defn(name=names.COMPACT)
    async def compact(self, input: CompactInput) -> CompactOutput:
        try:
            loaded = await asyncio.to_thread(self._load, input)
        except NotFoundError as err:
            raise not_found(err) from err
        if isinstance(loaded, CompactOutput):
            return loaded
        agent, context, counts, tools_tokens = loaded
        window = agent.llm_config.context_window
        before = sum(counts)
        if system_prompt_overflows(counts[0], tools_tokens, window):
            return CompactOutput(
                mode="none",
                tokens_before=before,
                tokens_after=before,
                system_overflow=True,
                detail=_overflow_text(counts[0], tools_tokens, window),
            )
        plan = plan_sliding_window(context, counts, window) if input.mode == "sliding_window" else None
        plan = plan or plan_all(context, counts)
        if not plan.evict_ids:
            return CompactOutput(mode="none", tokens_before=before, tokens_after=before, detail="nothing left to evict")
        evicted = set(plan.evict_ids)
        summary = await self._summarize(agent, [m for m in context if m.id in evicted], window)
        summary_text = summary_message_text(summary, len(plan.evict_ids))
        summary_tokens = count_message({"role": "user", "content": summary_text})
        if plan.tokens_after_estimate + summary_tokens + tools_tokens > window:
            plan = plan_hard_eviction(context, counts)
            summary_text = summary_message_text(clip_summary(summary, max(200, window // 4)), len(plan.evict_ids))
            summary_tokens = count_message({"role": "user", "content": summary_text})
        after = plan.tokens_after_estimate + summary_tokens
        output = CompactOutput(
            mode=plan.mode,
            tokens_before=before,
            tokens_after=after,
            evicted=len(plan.evict_ids),
            message_ids=[input.summary_message_id, input.event_message_id],
        )
        await asyncio.to_thread(self._write, input, context, plan, summary_text, output)
        return output

    def _load(self, input: CompactInput) -> CompactOutput | tuple[AgentState, list[Message], list[int], int]:
        with self._db.transaction(read_only=True) as session:
            done = messages.load_messages(session, [input.event_message_id])
            if done:
                return CompactOutput.model_validate(json.loads(done[0].text))
            agent = agents.get_agent(session, input.agent_id)
            context = messages.load_in_context(session, input.agent_id)
            tools = get_tool_defs(session, agent.tools)
        cap = tool_return_cap(agent.llm_config.context_window)
        counts = [sum(count_message(w) for w in to_openai_messages([m], tool_return_chars=cap)) for m in context]
        tools_tokens = count_tools(offered_tool_schemas(list(tools.values()), []))
        return agent, context, counts, tools_tokens

    async def _summarize(self, agent: AgentState, evicted: Sequence[Message], window: int) -> str:
        if not evicted:
            return "(nothing to summarise)"
        transcript = _transcript(evicted, limit_chars=max(2_000, window * 2))
        config = agent.llm_config
        provider = self._llm.provider(config)
        model = (config.compaction_model or config.model).partition("/")[2] or config.model_name
        request = ChatRequest(model=model, messages=summary_request_messages(transcript, SUMMARY_WORDS))
        started = time.monotonic_ns()
        async with provider_call():
            response = await provider.complete(request)
        usage = response.usage or TokenUsage()
        record_llm_usage(
            provider_of(config).name,
            config.compaction_model or config.model,
            prompt=usage.prompt_tokens,
            completion=usage.completion_tokens,
            elapsed_ns=time.monotonic_ns() - started,
        )
        return clip_summary(response.content or "", max(500, SUMMARY_WORDS * 8))

    def _write(
        self, input: CompactInput, context: list[Message], plan: CompactionPlan, summary: str, output: CompactOutput
    ) -> None:
        summary_message = Message(
            id=input.summary_message_id,
            agent_id=input.agent_id,
            role="summary",
            content=[TextContent(text=summary)],
            run_id=input.run_id,
        )
        event = {**output.model_dump(mode="json"), "trigger": input.trigger}
        event_message = Message(
            id=input.event_message_id,
            agent_id=input.agent_id,
            role="event",
            content=[TextContent(text=json.dumps(event))],
            run_id=input.run_id,
        )
        with self._db.transaction() as session:
            messages.insert_messages(session, [summary_message, event_message])
            new_ids = [context[0].id, summary_message.id, *plan.keep_ids]
            if not messages.swap_in_context(session, input.agent_id, [m.id for m in context], new_ids):
                raise ApplicationError(
                    "the context changed while it was being compacted; compacting again", type="ContextChanged"
                )


def _transcript(evicted: Sequence[Message], limit_chars: int) -> str:
    """The evicted messages as plain text for the summarizer, each piece and the whole clipped
    so the summary request fits the model (Letta issue 3279)."""
    lines: list[str] = []
    for message in evicted:
        if message.text:
            lines.append(f"{message.role}: {message.text[:TRANSCRIPT_PIECE_CHARS]}")
        lines += [f"{message.role} called {c.name}({c.arguments[:TRANSCRIPT_PIECE_CHARS]})" for c in message.tool_calls]
        lines += [
            f"tool result ({r.status}): {(r.func_response or '')[:TRANSCRIPT_PIECE_CHARS]}"
            for r in message.tool_returns
        ]
    text = "\n".join(lines)
    return text if len(text) <= limit_chars else "[earliest part omitted]\n" + text[-limit_chars:]


def _overflow_text(system_tokens: int, tools_tokens: int, window: int) -> str:
    return (
        f"the system prompt ({system_tokens} tokens, memory blocks included) and the tool schemas ({tools_tokens} tokens) "
        f"do not fit the model's context window of {window} tokens: shrink the memory blocks or the system prompt, "
        "give the agent fewer tools, or use a model with a larger window"
    )
