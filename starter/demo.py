"""The README's demo: on the bundled local model one memory edit; on the scripted model an edit and a recall."""

from __future__ import annotations

from perdure.agents import create_agent
from perdure.schemas.agent import LOCAL_MODEL, AgentCreate, BlockCreate, LLMConfig, TerminalToolRule
from perdure.settings import default_model
from perdure.store.agents import get_agent
from starter.client import PerdureClient
from starter.render import agent_text, response_text

TURNS = ("Hi! My name is Ada and I love sailing.", "What do you remember about me?")
LOCAL_TURNS = ("My name is Ada, please remember it.",)
LOCAL_MAX_STEPS = 3
DEMO_BLOCK_LIMIT = 200
"""Also the longest text the model may write into it (see `constrained_memory_arguments`)."""


async def run_demo(client: PerdureClient, ui_url: str | None = None) -> str:
    """Create a fresh agent, talk to it, and return the printed transcript."""
    model = default_model()
    local = model == LOCAL_MODEL
    agent = create_agent(client.db, local_demo_agent() if local else scripted_demo_agent(model))
    out = [f"demo agent {agent.id} on model {model}"]
    if model.startswith("scripted/"):
        out.append(
            "(answers come from the scripted demo model, a stand-in that follows rules: it is not a language model)"
        )
    if local:
        out.append("(the bundled 135M-parameter model, for trying Perdure: expect simple, sometimes odd answers)")
    turns = LOCAL_TURNS if local else TURNS
    for text in turns:
        response = await client.send_message(agent.id, text, max_steps=LOCAL_MAX_STEPS if local else None)
        out += ["", response_text(response)]
    with client.db.transaction(read_only=True) as session:
        out += ["", "memory after the conversation:", agent_text(get_agent(session, agent.id))]
    if ui_url:
        out += [
            "",
            f"inspect the runs in the Temporal UI: {ui_url}/namespaces/default/workflows?query=AgentId%3D%22{agent.id}%22",
        ]
    return "\n".join(out)


def scripted_demo_agent(model: str) -> AgentCreate:
    return AgentCreate(
        name="demo",
        model=model,
        memory_blocks=[
            BlockCreate(label="persona", value="I am Perdure's demo agent. I keep notes about the user."),
            BlockCreate(label="human", value=""),
        ],
    )


def local_demo_agent() -> AgentCreate:
    """What a 135M model does well: one memory edit. One memory tool and one block, greedy
    decoding (temperature 0: "Ada" in 10 of 10 tries, 8 of 10 at 0.2) with llama.cpp's repeat penalty, and a rule that ends the run once memory is
    written: after a tool result (or any later question) this model writes the same memory
    again rather than answer, in every prompt tried."""
    return AgentCreate(
        name="local-demo",
        model=LOCAL_MODEL,
        memory_blocks=[BlockCreate(label="human", value="", limit=DEMO_BLOCK_LIMIT)],
        tools=["core_memory_append"],
        include_base_tools=False,
        tool_rules=[TerminalToolRule(tool_name="core_memory_append")],
        llm_config=LLMConfig(model=LOCAL_MODEL, temperature=0.0, extra_body={"repeat_penalty": 1.2}),
    )
