"""`/v1/tools/` through the official letta-client: create, upsert, list, retrieve, delete a custom
tool, then an agent made over HTTP calls it in a run, with its tool variables."""

from __future__ import annotations

import uuid

import httpx
import pytest
from letta_client import AsyncLetta, ConflictError, NotFoundError, UnprocessableEntityError

from perdure.scripted.server import ScriptedLLMServer
from tests.conftest import API_KEY
from tests.helpers import call, text
from tests.letta_helpers import letta_llm_config

pytestmark = pytest.mark.usefixtures("worker")

SOURCE = '''
import os


def {name}(city: str) -> str:
    """Say where the token points.

    Args:
        city: The city.
    """
    print("looking", city)
    return city + ":" + os.environ.get("CITY_TOKEN", "none")
'''


async def test_a_tool_made_over_http_runs_in_an_agent_made_over_http(
    letta: AsyncLetta, llm: ScriptedLLMServer, model_name: str
) -> None:
    name = f"where_{uuid.uuid4().hex[:8]}"
    tool = await letta.tools.create(source_code=SOURCE.format(name=name), tags=["geo"])
    assert tool.id.startswith("tool-") and tool.name == name and tool.tool_type == "custom"
    assert tool.json_schema == {
        "name": name,
        "description": "Say where the token points.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city."}},
            "required": ["city"],
        },
    }
    with pytest.raises(ConflictError):
        await letta.tools.create(source_code=SOURCE.format(name=name))
    replaced = await letta.tools.upsert(source_code=SOURCE.format(name=name).replace('":"', '"="'))
    assert replaced.id == tool.id
    assert [t.id async for t in letta.tools.list(name=name)] == [tool.id]
    assert (await letta.tools.retrieve(tool.id)).source_code == SOURCE.format(name=name).replace('":"', '"="')

    agent = await letta.agents.create(
        name="http-tools",
        llm_config=letta_llm_config(model_name, llm.base_url),
        tools=[name],
        tool_exec_environment_variables={"CITY_TOKEN": "tok"},
    )
    llm.script(model_name, [call(name, city="Oslo"), text("done")])
    response = await letta.agents.messages.create(agent.id, input="where?")
    [tool_return] = [m for m in response.messages if m.message_type == "tool_return_message"]
    assert (tool_return.status, tool_return.tool_return, tool_return.stdout) == (
        "success",
        "Oslo=tok",
        ["looking Oslo\n"],
    )

    await letta.agents.delete(agent.id)
    await letta.tools.delete(tool.id)
    with pytest.raises(NotFoundError):
        await letta.tools.retrieve(tool.id)


async def test_a_bad_tool_is_422_with_one_readable_line(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers={"authorization": f"Bearer {API_KEY}"}) as http:
        refused = await http.post("/v1/tools/", json={"source_code": "def f(x):\n    pass\n"})
    assert refused.status_code == 422
    assert refused.json() == {"detail": "argument x of f has no type annotation"}


async def test_a_builtin_name_is_refused(letta: AsyncLetta) -> None:
    with pytest.raises(UnprocessableEntityError, match="memory_insert is a built-in tool's name"):
        await letta.tools.create(source_code='def memory_insert():\n    """Clash."""\n')
