"""Errors the store raises for bad input, with messages meant for people."""


class NotFoundError(LookupError):
    """An id that names nothing: the CLI prints it as one line and exits non-zero."""


class InvalidRequestError(ValueError):
    """A request the store refuses without changing anything."""
