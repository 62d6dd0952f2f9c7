"""The LLM request activity: loads the context by id, asks the model, returns only its answer.

It stays a regular (not local) activity: it can take minutes, heartbeats so that cancellation
reaches it, and is retried by Temporal with backoff (the provider client never retries).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import not_found
from activities.metrics import record_llm_call
from activities.provider_calls import provider_call
from activities.store_tokens import token_publisher
from perdure.providers.base import ChatProvider, ChatRequest, ChatResponse
from perdure.providers.anthropic import AnthropicProvider
from perdure.providers.anthropic_format import to_anthropic_messages
from perdure.providers.openai import OpenAICompatibleProvider
from perdure.providers.registry import LOCAL_PROVIDER, SCRIPTED_PROVIDER, ProviderSpec, provider_spec
from perdure.providers.structured import StructuredToolCalling
from perdure.providers.openai_format import to_openai_messages
from perdure.tools.returns import tool_return_cap
from perdure.prompt import compile_plain_system_prompt
from perdure.schemas.messages import Message, TextContent
from perdure.schemas.agent import Block, LLMConfig
from perdure.schemas.approvals import ClientTool
from perdure.schemas.tools import ToolDef, client_tool_def
from perdure.schemas.run import LLMStepInput, LLMStepOutput, TokenUsage
from perdure.tokens import count_message, count_request
from perdure.settings import LOCAL_MODEL_URL_ENV, SCRIPTED_MODEL_URL_ENV, Settings
from perdure.store import agents, mcp_servers
from perdure.store.context import load_context_messages, load_request_agent
from perdure.store.db import Database
from perdure.store.errors import NotFoundError
from perdure.tools.registry import get_tool_defs
from perdure.tools.schemas import constrained_memory_arguments
from perdure import names


class LLMActivities:
    def __init__(self, db: Database, settings: Settings, http: httpx.AsyncClient) -> None:
        self._db = db
        self._settings = settings
        self._http = http

    @activity.defn(name=names.LLM_STEP)
    async def llm_step(self, input: LLMStepInput) -> LLMStepOutput:
        try:
            request, config = await asyncio.to_thread(self._build_request, input)
        except NotFoundError as err:
            raise not_found(err) from err
        provider = self.provider(config)
        started = time.monotonic_ns()
        async with provider_call():
            if input.stream_tokens:
                async with token_publisher(input, self._db) as publisher:
                    response = await provider.stream(request, publisher.add)
            else:
                response = await provider.complete(request)
        output = _to_output(response, config, time.monotonic_ns() - started)
        # Counting the whole request takes milliseconds on a long context; it is only needed
        # when the provider did not say how long the prompt was (in a thread: the event loop
        # also runs workflows).
        request_tokens = (
            0
            if output.usage.prompt_tokens > 0
            else await asyncio.to_thread(count_request, request.messages, request.tools)
        )
        answered = output.model_copy(
            update={"request_tokens": request_tokens, "response_tokens": _answer_tokens(output)}
        )
        record_llm_call(config, provider_of(config).name, answered)
        return answered

    def provider(self, config: LLMConfig) -> ChatProvider:
        """The agent's model over HTTP, on the protocol its provider speaks; for a model without
        native tool calls, wrapped so tools go by schema-constrained answers."""
        spec = provider_of(config)
        provider: ChatProvider = (
            AnthropicProvider(self.base_url(config), self.api_key(config), client=self._http)
            if spec.api == "anthropic"
            else OpenAICompatibleProvider(self.base_url(config), self.api_key(config), client=self._http)
        )
        return StructuredToolCalling(provider) if config.tool_call_mode == "json_schema" else provider

    def base_url(self, config: LLMConfig) -> str:
        """The agent's endpoint, else the scripted server for `scripted/*`, the local model for
        `local/*`, OPENAI_BASE_URL for `openai/*`, else the provider's variable or usual address."""
        spec = provider_of(config)
        if config.endpoint:
            return config.endpoint
        if spec.name == SCRIPTED_PROVIDER:
            if self._settings.scripted_base_url is None:
                raise ApplicationError(
                    f"model {config.model} is the scripted stand-in, and this worker serves none: run the worker with "
                    f"`perdure dev` (which starts it), or set {SCRIPTED_MODEL_URL_ENV} to a running scripted server",
                    type="LLMNotFoundError",
                    non_retryable=True,
                )
            return self._settings.scripted_base_url
        if spec.name == LOCAL_PROVIDER:
            if self._settings.local_base_url is None:
                raise ApplicationError(
                    f"model {config.model} is the bundled local model, and this worker has none: run the worker with "
                    f"`perdure dev` (which starts it), or set {LOCAL_MODEL_URL_ENV} to a running `python -m starter.local_model`",
                    type="LLMNotFoundError",
                    non_retryable=True,
                )
            return self._settings.local_base_url
        if spec.name == "openai" and self._settings.openai_base_url:
            return self._settings.openai_base_url
        url = spec.base_url_from_env()
        if url is None:
            raise ApplicationError(
                f"model {config.model} has no endpoint: give the agent one, or set {spec.base_url_env} on the worker",
                type="LLMNotFoundError",
                non_retryable=True,
            )
        return url

    @staticmethod
    def api_key(config: LLMConfig) -> str | None:
        """The key never goes to the scripted stand-in; elsewhere it comes from this process's env."""
        spec = provider_of(config)
        return None if spec.name == SCRIPTED_PROVIDER else spec.api_key()

    def _build_request(self, input: LLMStepInput) -> tuple[ChatRequest, LLMConfig]:
        """Load the context and build the request (in a thread: the database read and the
        message conversion must not hold the worker's event loop, which also runs workflows)."""
        with self._db.transaction(read_only=True) as session:
            agent = load_request_agent(session, input.agent_id)
            context = load_context_messages(session, agent.message_ids)
            offered = input.allowed_tools if input.allowed_tools is not None else agent.tools
            tools = get_tool_defs(session, offered)
            mcp_names = [name for name in offered if name not in tools]
            if mcp_names:  # offered names the tools table lacks are the run's MCP tools; most runs have none
                tools |= mcp_servers.run_tool_defs(session, input.run_id, mcp_names)
            config = agent.llm_config
            schema_answers = config.tool_call_mode == "json_schema"
            blocks = agents.get_blocks(session, input.agent_id) if schema_answers else []
        schemas = offered_tool_schemas([tools[name] for name in offered if name in tools], input.client_tools)
        if schema_answers:
            context, schemas = for_schema_answers(agent.system, blocks, context, schemas)
        # json_schema answers rewrite the chat-completions shape into plain turns every protocol reads
        native_anthropic = provider_of(config).api == "anthropic" and config.tool_call_mode == "native"
        wire_messages = to_anthropic_messages if native_anthropic else to_openai_messages
        cap = tool_return_cap(config.context_window)
        request = ChatRequest(
            model=config.model_name,
            messages=wire_messages([*context, *input.new_messages], tool_return_chars=cap),
            tools=schemas or None,
            tool_choice=tool_choice(schemas, input.force_tool_call) if schemas else None,
            parallel_tool_calls=input.parallel_tool_calls if schemas else None,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            extra_body=config.extra_body or {},
            reasoning_budget=config.reasoning_budget,
        )
        return request, config


def provider_of(config: LLMConfig) -> ProviderSpec:
    """The provider table's entry; an agent stored before providers were checked at creation may
    name none, and gets one clear, final error instead of retries."""
    spec = provider_spec(config.provider_type)
    if spec is None:
        problem = config.provider_problem() or f"unknown provider {config.provider_type!r}"
        raise ApplicationError(problem, type="LLMNotFoundError", non_retryable=True)
    return spec


def for_schema_answers(
    system: str, blocks: list[Block], context: list[Message], schemas: list[dict[str, Any]]
) -> tuple[list[Message], list[dict[str, Any]]]:
    """What a model without native tool calling reads best: memory as plain lines instead of
    Letta's XML layout (which it copies from), and memory tools held to the agent's writable
    blocks and their limits by the answer's grammar."""
    if context and context[0].role == "system":
        plain = compile_plain_system_prompt(system, blocks)
        context = [context[0].model_copy(update={"content": [TextContent(text=plain)]}), *context[1:]]
    writable = [b for b in blocks if not b.read_only]
    return context, constrained_memory_arguments(
        schemas, [b.label for b in writable], max((b.limit for b in writable), default=0)
    )


def tool_choice(schemas: list[dict[str, Any]], force: bool) -> str | dict[str, Any]:
    """Letta's forcing: the one allowed tool by name, else any tool ("required"), else "auto"."""
    if not force:
        return "auto"
    if len(schemas) == 1:
        return {"type": "function", "function": {"name": schemas[0]["function"]["name"]}}
    return "required"


def offered_tool_schemas(server_tools: list[ToolDef], client_tools: list[ClientTool]) -> list[dict[str, Any]]:
    """Server tools, minus any a client tool of the same name shadows, then the client tools."""
    shadowed = {tool.name for tool in client_tools}
    schemas = [tool.openai_schema() for tool in server_tools if tool.name not in shadowed]
    return schemas + [client_tool_def(tool).openai_schema() for tool in client_tools]


def _answer_tokens(output: LLMStepOutput) -> int:
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in output.tool_calls
    ]
    return count_message({"role": "assistant", "content": output.content, "tool_calls": calls})


def _to_output(response: ChatResponse, config: LLMConfig, elapsed_ns: int) -> LLMStepOutput:
    return LLMStepOutput(
        content=response.content,
        reasoning=response.reasoning,
        reasoning_parts=response.reasoning_parts,
        tool_calls=response.tool_calls,
        finish_reason=response.finish_reason,
        usage=response.usage or TokenUsage(),
        model=response.model or config.model_name,
        llm_request_ns=elapsed_ns,
    )
