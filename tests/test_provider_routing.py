"""Which server a model handle goes to: the provider table, Letta's `model_endpoint_type`, the
per-provider environment variables, and the refusal of a provider nobody serves.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.llm import LLMActivities
from perdure.agents import create_agent
from perdure.providers.anthropic import AnthropicProvider
from perdure.providers.openai import OpenAICompatibleProvider
from perdure.providers.registry import PROVIDERS, known_providers
from perdure.providers.structured import StructuredToolCalling
from perdure.schemas.agent import AgentCreate, LLMConfig
from perdure.schemas.letta import StopReasonType
from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.settings import Settings, default_model
from perdure.store.db import Database
from starter.client import PerdureClient
from starter.devserver import temporal_binary
from tests.helpers import PERDURE, REPO
from perdure.names import workflow_id


@pytest.fixture
async def activities(db: Database, settings: Settings) -> AsyncIterator[LLMActivities]:
    async with httpx.AsyncClient() as http:
        yield LLMActivities(db, settings.model_copy(update={"openai_base_url": None}), http)


@pytest.fixture(autouse=True)
def clean_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table reads the worker's environment: start every test from none of its variables."""
    for spec in PROVIDERS.values():
        for name in (spec.base_url_env, spec.api_key_env):
            if name:
                monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("model", "provider_class", "url"),
    [
        ("anthropic/claude-sonnet-4-5", AnthropicProvider, "https://api.anthropic.com"),
        ("openai/gpt-4o-mini", OpenAICompatibleProvider, "https://api.openai.com/v1"),
        ("ollama/llama3.2", OpenAICompatibleProvider, "http://localhost:11434/v1"),
        ("vllm/qwen2.5", OpenAICompatibleProvider, "http://localhost:8000/v1"),
        ("lmstudio/qwen2.5", OpenAICompatibleProvider, "http://localhost:1234/v1"),
        ("openrouter/anthropic/claude-3.5-sonnet", OpenAICompatibleProvider, "https://openrouter.ai/api/v1"),
        ("together/meta-llama/Llama-3-70b", OpenAICompatibleProvider, "https://api.together.xyz/v1"),
        ("groq/llama-3.1-8b-instant", OpenAICompatibleProvider, "https://api.groq.com/openai/v1"),
    ],
)
def test_the_handle_prefix_picks_protocol_and_address(
    activities: LLMActivities, model: str, provider_class: type, url: str
) -> None:
    config = LLMConfig(model=model)
    assert isinstance(activities.provider(config), provider_class)
    assert activities.base_url(config) == url


def test_environment_overrides_the_address_and_gives_the_key(
    activities: LLMActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://gateway:9000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-xyz")
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434/v1")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")

    claude = LLMConfig(model="anthropic/claude-sonnet-4-5")
    assert activities.base_url(claude) == "http://gateway:9000" and activities.api_key(claude) == "sk-ant-xyz"
    assert activities.base_url(LLMConfig(model="ollama/llama3.2")) == "http://gpu-box:11434/v1"
    assert activities.api_key(LLMConfig(model="ollama/llama3.2")) is None, "a keyless provider never gets another's key"
    assert activities.api_key(LLMConfig(model="groq/llama")) == "gsk-1"
    assert activities.api_key(LLMConfig(model="openai/gpt-4o-mini")) == "sk-openai"
    assert activities.api_key(LLMConfig(model="anthropic/claude", endpoint="http://mine")) == "sk-ant-xyz"
    assert activities.api_key(LLMConfig(model="scripted/demo")) is None
    assert activities.base_url(LLMConfig(model="anthropic/claude", endpoint="http://mine/v1")) == "http://mine/v1", (
        "the agent's endpoint wins"
    )


def test_model_endpoint_type_overrides_the_prefix(activities: LLMActivities) -> None:
    config = LLMConfig(model="openai/qwen2.5", model_endpoint_type="vllm")
    assert activities.base_url(config) == "http://localhost:8000/v1"
    assert isinstance(
        activities.provider(LLMConfig(model="x/claude-3", model_endpoint_type="anthropic")), AnthropicProvider
    )


def test_lettas_own_llm_config_shape_is_read() -> None:
    """Letta names the model bare, beside `model_endpoint_type` and `model_endpoint` (and a `handle`)."""
    config = AgentCreate.model_validate(
        {
            "llm_config": {
                "model": "claude-sonnet-4-5",
                "model_endpoint_type": "anthropic",
                "model_endpoint": "https://api.anthropic.com/v1",
                "context_window": 200000,
            }
        }
    ).resolved_llm_config()
    assert config.model == "anthropic/claude-sonnet-4-5" and config.endpoint == "https://api.anthropic.com/v1"
    assert config.model_name == "claude-sonnet-4-5" and config.context_window == 200000
    handled = LLMConfig.model_validate(
        {"model": "gpt-4o-mini", "handle": "openai/gpt-4o-mini", "model_endpoint_type": "openai"}
    )
    assert handled.model == "openai/gpt-4o-mini"


def test_json_schema_mode_wraps_either_protocol(activities: LLMActivities) -> None:
    assert isinstance(
        activities.provider(LLMConfig(model="ollama/qwen", tool_calling="json_schema")), StructuredToolCalling
    )
    config = AgentCreate.model_validate(
        {"model": "anthropic/claude-sonnet-4-5", "llm_config": {"tool_calling": "json_schema"}}
    ).resolved_llm_config()
    assert config.provider_problem() is None and config.tool_call_mode == "json_schema"
    assert isinstance(activities.provider(config), StructuredToolCalling)
    assert not isinstance(activities.provider(LLMConfig(model="anthropic/claude-sonnet-4-5")), StructuredToolCalling)


def test_an_unknown_provider_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError) as raised:
        AgentCreate.model_validate({"model": "acme/gpt-9"})
    assert "unknown model provider 'acme'" in str(raised.value)
    assert ", ".join(known_providers()) in str(raised.value)
    with pytest.raises(ValueError, match="unknown model provider 'acme'"):
        AgentCreate.model_validate({"llm_config": {"model": "m", "model_endpoint_type": "acme"}})


def test_a_stored_agent_with_an_unknown_provider_fails_once_and_clearly(activities: LLMActivities) -> None:
    """Agents stored before providers were checked: one final error, not five retries."""
    with pytest.raises(ApplicationError) as raised:
        activities.provider(LLMConfig(model="acme/gpt-9"))
    assert raised.value.non_retryable and "known providers" in raised.value.message


def test_cli_refuses_an_unknown_provider_in_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [str(PERDURE), "agent", "create", "--model", "acme/gpt-9"],
        cwd=REPO,
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("perdure: error: ")
    assert (
        "unknown model provider 'acme'" in result.stderr and "anthropic" in result.stderr and "ollama" in result.stderr
    )
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"llm_config": {"model": "m", "model_endpoint_type": "acme"}}))
    refused = subprocess.run(
        [str(PERDURE), "agent", "create", "--file", str(path)], cwd=REPO, env=cli_env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "'acme'" in refused.stderr and refused.stderr.count("\n") == 1


async def test_an_anthropic_agent_without_endpoint_goes_to_anthropic_base_url_with_its_key(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    client: PerdureClient,
    llm: ScriptedLLMServer,
    model_name: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bug this table fixes: `anthropic/...` went to OPENAI_BASE_URL with OPENAI_API_KEY.
    The worker reads ANTHROPIC_* when it asks, and the key never reaches the history."""
    secret = f"sk-ant-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm.base_url.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-be-sent")
    agent = create_agent(db, AgentCreate.model_validate({"model": f"anthropic/{model_name}"}))
    llm.script(model_name, [ScriptedReply(content="Hello from Claude.")])

    response = await client.send_message(agent.id, "hello")

    assert response.stop_reason.stop_reason is StopReasonType.end_turn
    (headers,) = llm.request_headers(model_name)
    assert headers["x-api-key"] == secret and "authorization" not in headers
    assert "system" in llm.requests(model_name)[0], "asked over the Messages API"
    shown = subprocess.run(
        [
            temporal_binary(),
            "workflow",
            "show",
            "--workflow-id",
            workflow_id(agent.id),
            "--address",
            temporal_address,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert agent.id in shown and secret not in shown


def test_an_anthropic_key_alone_makes_claude_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERDURE_DEFAULT_MODEL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-1")
    assert default_model() == "anthropic/claude-sonnet-4-5"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    assert default_model() == "openai/gpt-4o-mini", "an OpenAI endpoint still comes first"
