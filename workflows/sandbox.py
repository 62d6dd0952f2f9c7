"""The workflow sandbox, shared by the worker and the replay tests.

`perdure` holds only pydantic schemas and pure helpers on the workflow path; passing it through
keeps one copy of each model class, so enums and models compare equal across modules.

`workflows` is passed through as well: otherwise the sandbox imports the workflow modules
afresh for every new run (tens of milliseconds of the run's first workflow task) and keeps that
copy for as long as the run stays in the worker's cache (about 0.3 MiB a run, measured with
`python bench/cached_runs.py`). The price: the sandbox no longer stops a non-deterministic call
(a clock, a random number, I/O) written in `workflows/` at run time; what keeps that code
deterministic is its rules (`workflow.now()`, `workflow.uuid4()`, no I/O) and the replay tests.
"""

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("perdure", "workflows")
    )
