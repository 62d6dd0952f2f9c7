"""Letta's agent files in `perdure agent create --file`: Letta's `llm_config` form, fields
Perdure ignores (named in a warning) and fields it refuses rather than drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from perdure.schemas.agent import AgentCreate, LLMConfig
from perdure.schemas.letta_create import parse_create_agent
from perdure.store.errors import InvalidRequestError
from tests.test_cli import perdure

LETTA_LLM_CONFIG = {
    "model": "gpt-4o-mini",
    "model_endpoint_type": "openai",
    "model_endpoint": "http://127.0.0.1:9/v1",
    "context_window": 32_000,
    "put_inner_thoughts_in_kwargs": True,
    "temperature": 0.3,
}


def test_letta_llm_config_form() -> None:
    config = LLMConfig.model_validate(LETTA_LLM_CONFIG)
    assert (config.model, config.endpoint, config.context_window, config.temperature) == (
        "openai/gpt-4o-mini",
        "http://127.0.0.1:9/v1",
        32_000,
        0.3,
    )
    handle = LLMConfig.model_validate({**LETTA_LLM_CONFIG, "handle": "proxy/gpt-4o-mini"})
    assert handle.model == "proxy/gpt-4o-mini", "the handle names the provider; the model name is sent as given"
    beside = LLMConfig.model_validate({"model": "openai/gpt-4o-mini", "model_endpoint": "http://127.0.0.1:9/v1"})
    assert beside.endpoint == "http://127.0.0.1:9/v1", "model_endpoint next to a handle is honoured"
    with pytest.raises(ValueError, match="disagree"):
        LLMConfig.model_validate({"model": "openai/x", "endpoint": "http://a/v1", "model_endpoint": "http://b/v1"})
    claude = LLMConfig.model_validate(
        {**LETTA_LLM_CONFIG, "model": "claude-sonnet-4-5", "model_endpoint_type": "anthropic"}
    )
    assert (claude.model, claude.provider_type) == ("anthropic/claude-sonnet-4-5", "anthropic")
    with pytest.raises(ValueError, match="unknown model provider 'bedrock'"):
        AgentCreate.model_validate({"llm_config": {**LETTA_LLM_CONFIG, "model_endpoint_type": "bedrock"}})


def test_ignored_and_refused_fields() -> None:
    parsed = parse_create_agent(
        {
            "llm_config": LETTA_LLM_CONFIG,
            "tags": ["a"],
            "metadata": None,
            "tool_ids": [],
            "max_tokens": 256,
            "model_settings": {"temperature": 0.1, "max_output_tokens": 99, "provider_type": "openai"},
            "compaction_settings": {"model": "openai/gpt-4o-mini", "mode": "all"},
        }
    )
    assert parsed.ignored == [
        "tags",
        "model_settings.provider_type",
        "llm_config.put_inner_thoughts_in_kwargs",
        "compaction_settings.mode",
    ], "empty and null fields ask for nothing; the rest are named"
    config = parsed.request.resolved_llm_config()
    assert (config.max_tokens, config.temperature, config.compaction_model) == (256, 0.3, "openai/gpt-4o-mini")
    with pytest.raises(InvalidRequestError, match="block_ids: shared blocks are not supported"):
        parse_create_agent({"block_ids": ["block-1"]})
    with pytest.raises(InvalidRequestError, match="model_settings.response_format"):
        parse_create_agent({"model_settings": {"response_format": {"type": "json_object"}}})


async def test_agent_create_takes_a_letta_agent_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    agent_file = tmp_path / "agent.json"
    fields: dict[str, Any] = {
        "name": "from-letta",
        "llm_config": LETTA_LLM_CONFIG,
        "tags": ["x"],
        "embedding": "openai/e",
    }
    agent_file.write_text(json.dumps(fields))
    result = await perdure(cli_env, "agent", "create", "--file", str(agent_file), "--json")
    assert result.returncode == 0, result.stderr
    ignored = "embedding, tags, llm_config.put_inner_thoughts_in_kwargs"
    expected = f"perdure: warning: ignored fields Perdure does not use: {ignored}"
    assert result.stderr.strip() == expected
    config = json.loads(result.stdout)["llm_config"]
    assert (config["model"], config["endpoint"]) == ("openai/gpt-4o-mini", "http://127.0.0.1:9/v1")

    agent_file.write_text(json.dumps({**fields, "tool_ids": ["tool-x"]}))
    refused = await perdure(cli_env, "agent", "create", "--file", str(agent_file))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "perdure: error: unsupported create-agent field(s): tool_ids: name the tools in `tools` instead"
    ]
