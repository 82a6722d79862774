"""An Attach stream to one vTPM, used as a plain request/response link.

Front ends (``vtpmctl attach``) and the tpm2-pytss TCTI hold the vTPM through one
of these. If DomS0 goes away, the next call fails and the call after that attaches
again, so a front end outlives a DomS0 restart.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc

ATTACH_TIMEOUT = 10.0


class LinkError(Exception):
    """The vTPM could not be reached; the message carries DomS0's reason."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Stream:
    def __init__(self, stub: pb_grpc.TpmStub, vtpm: str, holder: str) -> None:
        self.requests: queue.Queue[pb.AttachRequest | None] = queue.Queue()
        self.requests.put(pb.AttachRequest(attach=pb.Attach(vtpm=vtpm, holder=holder)))
        self.call = stub.Attach(iter(self.requests.get, None), wait_for_ready=True,
                                timeout=None)
        self.responses: Iterator[pb.AttachResponse] = self.call
        first = next(self.responses)
        self.vtpm = first.attached

    def exchange(self, request: pb.AttachRequest) -> pb.AttachResponse:
        self.requests.put(request)
        return next(self.responses)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


class AttachLink:
    """Thread-safe: one exchange at a time, in order."""

    def __init__(self, channel: grpc.Channel, vtpm: str, holder: str) -> None:
        self._channel = channel
        self._stub = pb_grpc.TpmStub(channel)
        self._vtpm = vtpm
        self._holder = holder
        self._stream: _Stream | None = None
        self._lock = threading.Lock()

    def open(self) -> pb.Vtpm:
        """Attach now (instead of at the first command); returns the vTPM."""
        with self._lock:
            return self._ensure().vtpm

    def transmit(self, command: bytes, locality: int = 0) -> bytes:
        request = pb.AttachRequest(command=pb.TransmitRequest(command=command,
                                                              locality=locality))
        return self._exchange(request).response.response

    def power_cycle(self, delete_volatile: bool = False) -> None:
        self._exchange(pb.AttachRequest(
            power_cycle=pb.PowerCycle(delete_volatile=delete_volatile)))

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def _ensure(self) -> _Stream:
        if self._stream is not None and self._stream.call.done():
            # DomS0 ended the stream between two commands (a restart, say): nothing
            # was in flight, so attaching again cannot run anything twice.
            self._stream.close()
            self._stream = None
        if self._stream is None:
            try:
                grpc.channel_ready_future(self._channel).result(timeout=ATTACH_TIMEOUT)
            except grpc.FutureTimeoutError:
                raise LinkError(f"DomS0 did not answer within {ATTACH_TIMEOUT:.0f} s",
                                grpc.StatusCode.UNAVAILABLE) from None
            try:
                self._stream = _Stream(self._stub, self._vtpm, self._holder)
            except grpc.RpcError as exc:
                raise _link_error(exc) from None
            except StopIteration:
                raise LinkError("DomS0 closed the Attach stream at once") from None
        return self._stream

    def _exchange(self, request: pb.AttachRequest) -> pb.AttachResponse:
        with self._lock:
            stream = self._ensure()
            try:
                return stream.exchange(request)
            except (grpc.RpcError, StopIteration) as exc:
                stream.close()
                self._stream = None
                if isinstance(exc, grpc.RpcError):
                    raise _link_error(exc) from None
                raise LinkError("DomS0 ended the Attach stream") from None


def _link_error(exc: grpc.RpcError) -> LinkError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return LinkError(f"{code.name if code else 'error'}: {details}", code)
