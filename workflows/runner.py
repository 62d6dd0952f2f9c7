"""How the worker runs workflow code: without the SDK's workflow sandbox.

The sandbox re-imports a workflow's modules for every run and intercepts non-deterministic
calls in them. Perdure passed its own packages (`perdure`, `workflows`) through it to keep one
copy of each module per process (a run's first task took tens of milliseconds, and a cached run
held a copy of the modules), and from then on the sandbox guarded none of Perdure's code at run
time while still costing CPU on every activation and every payload (it runs each call into the
workflow as a freshly compiled string). `python bench/runner_ab.py` measures a worker without
it against one with it, turn for turn in one run.

What keeps `workflows/` deterministic is its rules (`workflow.now()`, `workflow.uuid4()`, no
I/O, loop changes behind `workflow.patched()`) and `tests/test_replay.py`, which replays every
recorded history and every fresh scenario with `workflows/` imported inside the default, strict
sandbox, where a clock read, a random number or I/O on any path fails the replay.
"""

from temporalio.worker import UnsandboxedWorkflowRunner


def workflow_runner() -> UnsandboxedWorkflowRunner:
    return UnsandboxedWorkflowRunner()
