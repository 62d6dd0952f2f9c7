"""Links to the Temporal UI's run list, filtered the ways a person looks at agents' runs.

The UI keeps its columns and saved views in the browser, and neither the dev server nor the
`temporal` CLI can create them, so `perdure dev` prints these links instead: open one, then
"Save as view" keeps it in that browser.
"""

from __future__ import annotations

from urllib.parse import quote

from perdure import names

RUN_VIEWS = (
    (
        "runs waiting for a person",
        f'ExecutionStatus="Running" AND {names.STOP_REASON_ATTRIBUTE}="requires_approval"',
    ),
    ("failed runs", 'ExecutionStatus="Failed"'),
    ("every agent run", f'WorkflowType="{names.WORKFLOW}"'),
)
"""(title, list query) of the views the README suggests saving."""


def run_list_url(ui_url: str, query: str, namespace: str = "default") -> str:
    return f"{ui_url}/namespaces/{quote(namespace)}/workflows?query={quote(query, safe='')}"


def run_view_lines(ui_url: str, namespace: str = "default") -> list[str]:
    """One line per view: its title and its link."""
    return [f"  {title}: {run_list_url(ui_url, query, namespace)}" for title, query in RUN_VIEWS]
