"""The error hierarchy every SQEMS layer raises.

Each error carries a message a person can act on: the offending value and what to do
about it. The CLI prints it as one line; the API turns it into a typed error with
``code``.
"""

from __future__ import annotations


class SqemsError(Exception):
    """Base of every error SQEMS raises on purpose."""

    code = "SQEMS_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SqemsError):
    """A uid, file or named thing does not exist."""

    code = "NOT_FOUND"


class ValidationFailed(SqemsError):
    """Input broke a rule of the model: a field, a relationship, a time order."""

    code = "VALIDATION_FAILED"


class GraphUnavailable(SqemsError):
    """The graph store cannot be reached or opened."""

    code = "GRAPH_UNAVAILABLE"


class ConfigError(SqemsError):
    """Settings that cannot work (an unknown store URI, a data dir that is a file)."""

    code = "CONFIG_ERROR"


class Forbidden(SqemsError):
    """The caller's role does not allow the operation."""

    code = "FORBIDDEN"
