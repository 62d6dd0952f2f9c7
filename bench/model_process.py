"""The model stand-in in a process of its own, scripted from the benchmark's process, so the
worker's CPU time is the worker's alone."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply


def serve(commands: Any, answers: Any) -> None:
    """Serve until told to stop; each command scripts replies for a model, then is acknowledged."""
    with ScriptedLLMServer() as server:
        answers.put(server.base_url)
        while (command := commands.get()) is not None:
            model, replies = command
            server.script(model, [ScriptedReply.model_validate(r) for r in replies])
            answers.put(model)


class ModelProcess:
    def __init__(self, commands: Any, answers: Any, base_url: str) -> None:
        self._commands, self._answers, self.base_url = commands, answers, base_url

    def script(self, model: str, replies: list[ScriptedReply]) -> None:
        self._commands.put((model, [r.model_dump() for r in replies]))
        self._answers.get(timeout=30)


@contextmanager
def model_process() -> Iterator[ModelProcess]:
    context = multiprocessing.get_context("spawn")
    commands, answers = context.Queue(), context.Queue()
    process = context.Process(target=serve, args=(commands, answers), name="scripted-model")
    process.start()
    try:
        yield ModelProcess(commands, answers, answers.get(timeout=60))
    finally:
        commands.put(None)
        process.join(timeout=10)
