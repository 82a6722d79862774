"""Running one TPM command on behalf of a caller, with its one log line."""

from __future__ import annotations

import time

from domS0.logs import log_request
from tpm_emulator import response_code
from tpm_emulator.constants import command_name
from tpm_emulator.mutations import command_code
from vtpm_manager.errors import ManagerError
from vtpm_manager.instance import Instance, Lease


def run_command(
    instance: Instance, command: bytes, locality: int, lease: Lease | None, caller: str
) -> bytes:
    """Execute and write the request line (command code and response code only)."""
    started = time.perf_counter()
    outcome = "ok"
    response = b""
    try:
        response = instance.execute(command, locality, lease)
        return response
    except ManagerError as exc:
        outcome = type(exc).__name__
        raise
    finally:
        code = command_code(command)
        rc = response_code(response) if response else None
        log_request(
            "tpm command", started, vtpm=instance.record.name, caller=caller,
            command=command_name(code) if code is not None else "(no header)",
            locality=locality, rc="-" if rc is None else f"0x{rc:x}", outcome=outcome,
        )
