"""Errors the manager raises, each one naming what the caller can fix.

The classes map one to one onto canonical gRPC status codes in ``domS0``; the
manager itself knows nothing about gRPC.
"""


class ManagerError(Exception):
    """Base of every refusal by the manager; ``str()`` is a message for a person."""


class InvalidArgument(ManagerError):
    """The request itself is malformed (bad name, unknown engine, bad locality)."""


class NotFound(ManagerError):
    """No vTPM has that UUID or name."""


class AlreadyExists(ManagerError):
    """A vTPM with that name exists already."""


class FailedPrecondition(ManagerError):
    """The vTPM is not in a state that allows the operation (stopped, held)."""


class Unavailable(ManagerError):
    """The engine or the store cannot serve right now; retrying may help."""


class PermissionDenied(ManagerError):
    """The caller is authenticated but the security policy refuses the operation."""
