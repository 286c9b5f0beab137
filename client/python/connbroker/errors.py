"""PEP 249's exception hierarchy, and how the daemon's errors map onto it.

The class is chosen from the database's SQLSTATE when the error has one (the
classes psycopg2 and the MySQL drivers use, so code written for them catches
the same errors here), else from the daemon's ErrorDetail reason, else from
the gRPC status code. Every exception keeps what it was made from:
`code` (the gRPC status code's name), `sqlstate`, `reason` and `retryable`.
"""

import grpc


class Warning(Exception):  # noqa: A001 - the name PEP 249 requires
    """Important warnings, such as data truncation while inserting."""


class Error(Exception):
    """Base of every error this package raises."""

    def __init__(self, message, *, code=None, sqlstate="", reason="",
                 retryable=False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.sqlstate = sqlstate
        # psycopg2's spelling, for code that reads it.
        self.pgcode = sqlstate or None
        self.reason = reason
        self.retryable = retryable


class InterfaceError(Error):
    """The client or its configuration, not the database: an unknown
    connection name, a bad kwarg, a closed cursor."""


class DatabaseError(Error):
    """Errors related to the database."""


class DataError(DatabaseError):
    """A value out of range, a division by zero, a bad cast."""


class OperationalError(DatabaseError):
    """The database or the daemon is unreachable, overloaded, or ended the
    work: connection lost, timeout, cancel, serialization failure."""


class IntegrityError(DatabaseError):
    """A constraint refused the change."""


class InternalError(DatabaseError):
    """The database's transaction state is not valid for the request."""


class ProgrammingError(DatabaseError):
    """SQL the database refused: syntax, unknown table, wrong parameters."""


class NotSupportedError(DatabaseError):
    """A feature the database or the daemon does not have."""


# SQLSTATE class (first two characters) -> exception, as psycopg2 maps them.
_SQLSTATE_CLASSES = {
    "0A": NotSupportedError,
    "08": OperationalError,
    "21": ProgrammingError,
    "22": DataError,
    "23": IntegrityError,
    "24": InternalError,
    "25": InternalError,
    "26": InternalError,
    "27": OperationalError,
    "28": OperationalError,
    "2B": InternalError,
    "2D": InternalError,
    "2F": InternalError,
    "34": OperationalError,
    "38": InternalError,
    "39": InternalError,
    "3B": InternalError,
    "3D": ProgrammingError,
    "3F": ProgrammingError,
    "40": OperationalError,
    "42": ProgrammingError,
    "44": ProgrammingError,
    "53": OperationalError,
    "54": OperationalError,
    "55": OperationalError,
    "57": OperationalError,
    "58": OperationalError,
    "F0": InternalError,
    "HV": OperationalError,
    "P0": InternalError,
    "XX": InternalError,
}

_REASONS = {
    "CONFIG": InterfaceError,
    "SQL": ProgrammingError,
    "BACKEND": OperationalError,
    "POOL_EXHAUSTED": OperationalError,
    "UNKNOWN_HANDLE": OperationalError,
}

_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: ProgrammingError,
    grpc.StatusCode.NOT_FOUND: InterfaceError,
    grpc.StatusCode.UNIMPLEMENTED: NotSupportedError,
    grpc.StatusCode.ABORTED: InternalError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.OUT_OF_RANGE: DataError,
    grpc.StatusCode.ALREADY_EXISTS: IntegrityError,
}

_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def _class_for(code, sqlstate, reason):
    if sqlstate:
        cls = _SQLSTATE_CLASSES.get(sqlstate[:2].upper())
        if cls is not None:
            return cls
    if reason in _REASONS:
        return _REASONS[reason]
    return _CODES.get(code, OperationalError)


def make(code, message, sqlstate="", reason="", retryable=False):
    """The exception for a daemon error of this code, SQLSTATE and reason."""
    cls = _class_for(code, sqlstate, reason)
    # SQLSTATE "HY000" (MySQL's catch-all) says nothing: a refused statement
    # stays a ProgrammingError by its reason.
    return cls(message, code=code, sqlstate=sqlstate, reason=reason,
               retryable=retryable)


def from_session_error(error):
    """A SessionError (session.proto) as an exception."""
    from connbroker.v1 import broker_pb2

    code = _CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
    reason = ""
    if error.HasField("detail") and error.detail.reason:
        reason = broker_pb2.ErrorDetail.Reason.Name(error.detail.reason)
    return make(code, error.message, error.detail.sqlstate, reason,
                error.detail.retryable)


def from_rpc_error(rpc_error):
    """A failed gRPC call (the stream itself, not one request) as an
    exception: the daemon is unreachable, restarting, or refused the call."""
    return _call_failed(rpc_error.code(), rpc_error.details())


def from_status(code_number, details):
    """The same, from a status code number (the gRPC C++ transport)."""
    return _call_failed(
        _CODE_BY_NUMBER.get(code_number, grpc.StatusCode.UNKNOWN), details)


def _call_failed(code, details):
    details = details or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"connbroker daemon unavailable: {details}"
    return make(code, details)
