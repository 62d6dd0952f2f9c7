"""Running custom tools apart from the worker: processes with a clean environment and limits,
in Linux namespaces where bubblewrap works, kept warm so a call costs milliseconds."""
