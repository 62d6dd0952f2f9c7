"""Agent definition: memory blocks, tools, tool rules and LLM configuration.

Field names follow Letta's create-agent API so an agent file written for Letta loads here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from perdure.providers.registry import LOCAL_PROVIDER, known_providers, provider_spec

DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_BLOCK_LIMIT = 20_000
DEFAULT_MODEL = "scripted/demo"
MIN_REASONING_TOKENS = 1_024
"""Anthropic's smallest thinking budget."""
LOCAL_MODEL = "local/SmolLM2-135M-Instruct"
"""The bundled model `perdure dev` serves with llama.cpp when no other endpoint is configured."""
LOCAL_CONTEXT_WINDOW = 8_192
"""SmolLM2 was trained at 8,192 tokens; the local server's `n_ctx` is the same."""
TOOL_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
BASE_TOOLS: tuple[str, ...] = ("conversation_search", "memory_replace", "memory_insert")


class BlockCreate(BaseModel):
    """A memory block as given at agent creation."""

    label: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    value: str = ""
    limit: int = Field(default=DEFAULT_BLOCK_LIMIT, ge=1)
    read_only: bool = False
    description: str | None = None


class Block(BlockCreate):
    """A stored memory block. `limit` is metadata shown to the model, as in Letta."""

    id: str


class ToolCallNode(BaseModel):
    name: str
    args: dict[str, Any] | None = None


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool_name: str = Field(min_length=1)
    prompt_template: str | None = None


class InitToolRule(_Rule):
    type: Literal["run_first"] = "run_first"
    args: dict[str, Any] | None = None


class TerminalToolRule(_Rule):
    type: Literal["exit_loop"] = "exit_loop"


class ContinueToolRule(_Rule):
    type: Literal["continue_loop"] = "continue_loop"


class ChildToolRule(_Rule):
    type: Literal["constrain_child_tools"] = "constrain_child_tools"
    children: list[str]
    child_arg_nodes: list[ToolCallNode] | None = None


class ParentToolRule(_Rule):
    type: Literal["parent_last_tool"] = "parent_last_tool"
    children: list[str]


class ConditionalToolRule(_Rule):
    type: Literal["conditional"] = "conditional"
    child_output_mapping: dict[str, str] = Field(min_length=1)
    default_child: str | None = None
    require_output_mapping: bool = False


class MaxCountPerStepToolRule(_Rule):
    type: Literal["max_count_per_step"] = "max_count_per_step"
    max_count_limit: int = Field(ge=1)


class RequiredBeforeExitToolRule(_Rule):
    type: Literal["required_before_exit"] = "required_before_exit"


class RequiresApprovalToolRule(_Rule):
    type: Literal["requires_approval"] = "requires_approval"


ToolRule = Annotated[
    InitToolRule
    | TerminalToolRule
    | ContinueToolRule
    | ChildToolRule
    | ParentToolRule
    | ConditionalToolRule
    | MaxCountPerStepToolRule
    | RequiredBeforeExitToolRule
    | RequiresApprovalToolRule,
    Field(discriminator="type"),
]


class LLMConfig(BaseModel):
    """Which model answers and how.

    `model` is a handle `provider/name` (Letta's convention). The API key is deliberately
    absent: it lives only in the worker's environment.
    """

    model: str = DEFAULT_MODEL
    endpoint: str | None = None
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, ge=256)
    max_tokens: int | None = Field(default=None, ge=1)
    parallel_tool_calls: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    compaction_model: str | None = None
    """The model that writes compaction summaries (Letta's `compaction_settings.model`), at the
    same endpoint; None: the agent's own model."""
    extra_body: dict[str, Any] | None = None
    """Options the server takes beyond OpenAI's, sent with every request as they are (the
    OpenAI SDK's `extra_body`), e.g. `{"repeat_penalty": 1.2}` for llama.cpp."""
    tool_calling: Literal["native", "json_schema"] | None = None
    """How the model calls tools: `native` (OpenAI's `tools`), or `json_schema` for models
    without tool calling whose server constrains answers to a schema (llama.cpp, vLLM, Ollama).
    None: `json_schema` for the bundled local model, else `native`."""
    model_endpoint_type: str | None = None
    """Letta's name for the provider (`openai`, `anthropic`, `ollama`, ...); None: the handle's prefix."""
    enable_reasoner: bool | None = None
    """Letta's switch for extended thinking (Anthropic); the thoughts become reasoning messages."""
    max_reasoning_tokens: int | None = Field(default=None, ge=0)
    """The thinking budget; below Anthropic's minimum of 1,024, that minimum."""

    @model_validator(mode="before")
    @classmethod
    def _letta_form(cls, data: Any) -> Any:
        """Take Letta's form too: `model` a bare name with `model_endpoint_type`, `model_endpoint`
        and an optional `handle`. The request goes to `model_endpoint`, always (next to a handle
        too), under the name `model`; the handle's provider, else the endpoint type, names the
        provider."""
        if not isinstance(data, dict):
            return data
        shaped = dict(data)
        endpoint = shaped.pop("model_endpoint", None)
        if endpoint is not None:
            if shaped.get("endpoint") not in (None, endpoint):
                raise ValueError(f"endpoint {shaped['endpoint']!r} and model_endpoint {endpoint!r} disagree; give one")
            shaped["endpoint"] = endpoint
        handle = shaped.pop("handle", None)
        model = shaped.get("model")
        if isinstance(model, str) and "/" not in model:
            named = handle.partition("/")[0] if isinstance(handle, str) and "/" in handle else None
            provider = named or shaped.get("model_endpoint_type")
            if provider:
                shaped["model"] = f"{provider}/{model}"
        elif model is None and isinstance(handle, str):
            shaped["model"] = handle
        return shaped

    @field_validator("model")
    @classmethod
    def _handle_shape(cls, value: str) -> str:
        provider, sep, name = value.partition("/")
        if not sep or not provider or not name:
            raise ValueError(
                f"model must be a handle 'provider/model-name' such as 'openai/gpt-4o-mini', got {value!r}"
            )
        return value

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def provider_type(self) -> str:
        """Which provider answers: `model_endpoint_type`, else the handle's prefix."""
        return self.model_endpoint_type or self.provider

    @property
    def reasoning_budget(self) -> int | None:
        return max(MIN_REASONING_TOKENS, self.max_reasoning_tokens or 0) if self.enable_reasoner else None

    def provider_problem(self) -> str | None:
        """Why no provider can serve this config, or None: checked when an agent is made."""
        spec = provider_spec(self.provider_type)
        if spec is None:
            return (
                f"unknown model provider {self.provider_type!r} (model {self.model!r}); "
                f"known providers: {', '.join(known_providers())}"
            )
        return None

    @property
    def tool_call_mode(self) -> Literal["native", "json_schema"]:
        if self.tool_calling is not None:
            return self.tool_calling
        return "json_schema" if self.provider == LOCAL_PROVIDER else "native"

    @property
    def model_name(self) -> str:
        return self.model.split("/", 1)[1]


class CompactionSettings(BaseModel):
    """Letta's `compaction_settings` (the part Perdure uses)."""

    model: str | None = None


class AgentCreate(BaseModel):
    """Request to create an agent (Letta's `CreateAgent` subset)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="agent", min_length=1, max_length=200)
    system: str = "You are a helpful assistant with persistent memory."
    memory_blocks: list[BlockCreate] = Field(default_factory=list)
    tools: list[str] | None = None
    include_base_tools: bool = True
    tool_rules: list[ToolRule] = Field(default_factory=list)
    model: str | None = None
    llm_config: LLMConfig | None = None
    context_window_limit: int | None = Field(default=None, ge=256)
    parallel_tool_calls: bool | None = None
    description: str | None = None
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """How long a run may wait for an approval before ending `requires_approval` (None: forever)."""
    compaction_settings: CompactionSettings | None = None
    tool_exec_environment_variables: dict[str, str] = Field(default_factory=dict)
    """Variables the agent's custom tools see in their sandbox (Letta's field; `secrets` in
    newer agent files). Stored apart from the agent's state and messages."""

    @field_validator("tool_exec_environment_variables", mode="before")
    @classmethod
    def _variables_from_list(cls, value: Any) -> Any:
        """Letta's agent files list them as `{key, value}` objects."""
        if isinstance(value, list):
            return {item.get("key"): item.get("value") for item in value if isinstance(item, dict)}
        return value

    @field_validator("tool_exec_environment_variables")
    @classmethod
    def _variable_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(key for key in value if not TOOL_VARIABLE_NAME.fullmatch(key or ""))
        if bad:
            raise ValueError(
                f"tool variable names must be letters, digits and _ (not starting with a digit): {bad[0]!r}"
            )
        return value

    @model_validator(mode="after")
    def _unique_labels(self) -> AgentCreate:
        labels = [b.label for b in self.memory_blocks]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"memory block labels must be unique; repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _values_within_limits(self) -> AgentCreate:
        """Letta refuses a block created over its limit; a memory edit could never fit it again."""
        for block in self.memory_blocks:
            if len(block.value) > block.limit:
                raise ValueError(
                    f"memory block {block.label!r} holds {len(block.value)} characters, over its limit of {block.limit}"
                )
        return self

    @model_validator(mode="after")
    def _known_provider(self) -> AgentCreate:
        """An agent whose model no provider serves would only fail at its first message."""
        problem = self.resolved_llm_config().provider_problem()
        if problem:
            raise ValueError(problem)
        return self

    def resolved_llm_config(self) -> LLMConfig:
        """Merge the shorthand fields into one config, the way Letta's server does."""
        config = self.llm_config or LLMConfig()
        updates: dict[str, Any] = {}
        if self.model is not None:
            updates["model"] = self.model
        if self.context_window_limit is not None:
            updates["context_window"] = self.context_window_limit
        if self.parallel_tool_calls is not None:
            updates["parallel_tool_calls"] = self.parallel_tool_calls
        if self.compaction_settings is not None and self.compaction_settings.model is not None:
            updates["compaction_model"] = self.compaction_settings.model
        window_given = self.context_window_limit is not None or (
            self.llm_config is not None and "context_window" in self.llm_config.model_fields_set
        )
        if (updates.get("model") or config.model).startswith(f"{LOCAL_PROVIDER}/") and not window_given:
            updates["context_window"] = LOCAL_CONTEXT_WINDOW
        return LLMConfig.model_validate({**config.model_dump(), **updates})

    def resolved_tools(self) -> list[str]:
        names = list(BASE_TOOLS) if self.include_base_tools else []
        for name in self.tools or []:
            if name not in names:
                names.append(name)
        return names


class AgentState(BaseModel):
    """A stored agent as the CLI and activities see it."""

    id: str
    name: str
    system: str
    description: str | None = None
    blocks: list[Block]
    tools: list[str]
    tool_rules: list[ToolRule]
    llm_config: LLMConfig
    message_ids: list[str]
    created_at: datetime
    last_stop_reason: str | None = None
    approval_timeout_seconds: float | None = None

    def block(self, label: str) -> Block | None:
        return next((b for b in self.blocks if b.label == label), None)
