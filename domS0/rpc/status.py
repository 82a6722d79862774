"""Map manager refusals onto canonical gRPC status codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from vtpm_manager import errors

_CODES: dict[type[errors.ManagerError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

F = TypeVar("F", bound=Callable[..., Any])


def status_of(exc: errors.ManagerError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def abort_on_refusal(method: F) -> F:
    """Turn a ManagerError raised by a unary servicer method into its status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except errors.ManagerError as exc:
            context.abort(status_of(exc), str(exc))
        except OSError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"storage error: {exc.strerror}")

    return wrapper  # type: ignore[return-value]
