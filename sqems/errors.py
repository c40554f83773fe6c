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

    @property
    def extensions(self) -> dict[str, str]:
        """What a GraphQL error built from this one carries besides its message."""
        return {"code": self.code}


class NotFound(SqemsError):
    """A uid, file or named thing does not exist."""

    code = "NOT_FOUND"


class ValidationFailed(SqemsError):
    """Input broke a rule of the model: a field, a relationship, a time order."""

    code = "VALIDATION_FAILED"


class GraphUnavailable(SqemsError):
    """The graph store cannot be reached or opened."""

    code = "GRAPH_UNAVAILABLE"


class BrokerUnavailable(SqemsError):
    """The MQTT broker cannot be reached."""

    code = "BROKER_UNAVAILABLE"


class ConfigError(SqemsError):
    """Settings that cannot work (an unknown store URI, a data dir that is a file)."""

    code = "CONFIG_ERROR"


class Unauthenticated(SqemsError):
    """No credentials, or credentials that are unknown or revoked."""

    code = "UNAUTHENTICATED"


class Forbidden(SqemsError):
    """The caller's role does not allow the operation."""

    code = "FORBIDDEN"


class TimedOut(SqemsError):
    """The request took longer than the server allows."""

    code = "TIMEOUT"


class BadRequest(SqemsError):
    """An HTTP request the API cannot read: a body that is not JSON, or not a GraphQL
    request object."""

    code = "BAD_REQUEST"


class AuditUnavailable(SqemsError):
    """The audit trail is busy or cannot be written; the change it would record was
    not made."""

    code = "AUDIT_UNAVAILABLE"
