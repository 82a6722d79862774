"""TPM commands on stdin, responses on stdout: the server for tpm2-tss's ``cmd:`` TCTI.

``TPM2TOOLS_TCTI="cmd:tpm-emulator stdio --tpmstate dir=D"`` makes the TCTI start
this program (through ``/bin/sh -c``) for each TCTI context, write raw commands to
its stdin and read raw responses from its stdout: one command, one response, both
framed only by the TPM header's size field (client-behaviour.md 1.1). Each tool run
is a new process, so the TPM lives in the state directory between runs; this
process holds the directory's lock while it runs and waits for a previous one to let
go of it.

Nothing but responses may reach the TCTI's pipe: the response stream is a private
duplicate of fd 1, and fd 1 itself is pointed at stderr so that a stray print
cannot corrupt the framing.
"""

from __future__ import annotations

import os
from typing import Protocol

from ..constants import RC
from ..frame import error_response
from .framing import CommandSplitter, FrameTooLarge


class Backend(Protocol):
    def transmit(self, command: bytes, locality: int) -> bytes: ...


def private_stdout() -> int:
    """A duplicate of fd 1 for responses; fd 1 becomes a copy of stderr."""
    out = os.dup(1)
    os.dup2(2, 1)
    return out


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(backend: Backend, infd: int, outfd: int) -> int:
    """Answer commands until end of input; 0 then, 1 on a frame that cannot be read."""
    splitter = CommandSplitter()
    while True:
        data = os.read(infd, 65536)
        if not data:
            # A command cut short by EOF gets no answer: nobody is left to read it.
            return 0
        try:
            commands = splitter.feed(data)
        except FrameTooLarge:
            write_all(outfd, error_response(RC.COMMAND_SIZE))
            return 1
        for command in commands:
            write_all(outfd, backend.transmit(command, 0))
