"""What an activity reports about its work: Perdure's metrics through the activity's metric
meter, and OpenTelemetry attributes on the activity's span when tracing is on.

The span attributes follow OpenTelemetry's generative-AI conventions (`gen_ai.*`): the model,
the provider, token counts, the tool's name and call id. Never arguments, returns, endpoints or
keys: a trace backend is not a place for conversation content or secrets.
"""

from __future__ import annotations

from datetime import timedelta

from opentelemetry import trace
from temporalio import activity

from perdure import metrics
from perdure.schemas.agent import LLMConfig
from perdure.schemas.messages import ToolCall
from perdure.schemas.run import LLMStepOutput


def record_llm_call(config: LLMConfig, provider: str, output: LLMStepOutput) -> None:
    """Tokens and latency of one answered step request. When the provider reports no usage (as
    llama.cpp does), the tokens are Perdure's own count of the request and the answer."""
    record_llm_usage(
        provider,
        config.model,
        prompt=output.usage.prompt_tokens or output.request_tokens,
        completion=output.usage.completion_tokens or output.response_tokens,
        elapsed_ns=output.llm_request_ns,
    )
    trace.get_current_span().set_attributes(
        {
            "gen_ai.response.model": output.model or config.model_name,
            "gen_ai.response.finish_reasons": [output.finish_reason or ""],
            "perdure.tool_calls": len(output.tool_calls),
        }
    )


def record_llm_usage(provider: str, model: str, *, prompt: int, completion: int, elapsed_ns: int) -> None:
    """Tokens and latency of any LLM request (a step's, or a compaction's summary), on the metrics
    and on the activity's span."""
    labels = {"provider": provider, "model": model}
    meter = activity.metric_meter()
    tokens = meter.create_counter(metrics.LLM_TOKENS, metrics.LLM_TOKENS_HELP, "tokens")
    tokens.add(prompt, {**labels, "kind": "prompt"})
    tokens.add(completion, {**labels, "kind": "completion"})
    latency = meter.create_histogram_timedelta(metrics.LLM_LATENCY, metrics.LLM_LATENCY_HELP)
    latency.record(timedelta(microseconds=elapsed_ns / 1000), labels)
    trace.get_current_span().set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": completion,
        }
    )


def describe_tool_call(call: ToolCall) -> None:
    """Name the tool on the activity's span (the span's own name is the activity's, `execute_tool`)."""
    trace.get_current_span().set_attributes(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name, "gen_ai.tool.call.id": call.id}
    )
