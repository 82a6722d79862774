"""Numbers of swtpm's control channel: command codes, result codes, flags, limits.

From ``include/swtpm/tpm_ioctl.h``; result codes from libtpms' ``tpm_error.h``.
Each enum member is also exported under its C name (``CMD_INIT``, ``PTM_CAP_STOP``…).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final


class Command(IntEnum):
    """Control-channel command codes (the ``CMD_*`` enum of ``tpm_ioctl.h``)."""

    GET_CAPABILITY = 0x01
    INIT = 0x02
    SHUTDOWN = 0x03
    GET_TPMESTABLISHED = 0x04
    SET_LOCALITY = 0x05
    HASH_START = 0x06
    HASH_DATA = 0x07
    HASH_END = 0x08
    CANCEL_TPM_CMD = 0x09
    STORE_VOLATILE = 0x0A
    RESET_TPMESTABLISHED = 0x0B
    GET_STATEBLOB = 0x0C
    SET_STATEBLOB = 0x0D
    STOP = 0x0E
    GET_CONFIG = 0x0F
    SET_DATAFD = 0x10
    SET_BUFFERSIZE = 0x11
    GET_INFO = 0x12
    LOCK_STORAGE = 0x13  # swtpm >= 0.8


CMD_GET_CAPABILITY: Final = Command.GET_CAPABILITY
CMD_INIT: Final = Command.INIT
CMD_SHUTDOWN: Final = Command.SHUTDOWN
CMD_GET_TPMESTABLISHED: Final = Command.GET_TPMESTABLISHED
CMD_SET_LOCALITY: Final = Command.SET_LOCALITY
CMD_HASH_START: Final = Command.HASH_START
CMD_HASH_DATA: Final = Command.HASH_DATA
CMD_HASH_END: Final = Command.HASH_END
CMD_CANCEL_TPM_CMD: Final = Command.CANCEL_TPM_CMD
CMD_STORE_VOLATILE: Final = Command.STORE_VOLATILE
CMD_RESET_TPMESTABLISHED: Final = Command.RESET_TPMESTABLISHED
CMD_GET_STATEBLOB: Final = Command.GET_STATEBLOB
CMD_SET_STATEBLOB: Final = Command.SET_STATEBLOB
CMD_STOP: Final = Command.STOP
CMD_GET_CONFIG: Final = Command.GET_CONFIG
CMD_SET_DATAFD: Final = Command.SET_DATAFD
CMD_SET_BUFFERSIZE: Final = Command.SET_BUFFERSIZE
CMD_GET_INFO: Final = Command.GET_INFO
CMD_LOCK_STORAGE: Final = Command.LOCK_STORAGE


class Result(IntEnum):
    """TPM 1.2 style result codes that swtpm puts first in every response."""

    SUCCESS = 0x00
    BAD_PARAMETER = 0x03  # malformed or short input
    FAIL = 0x09
    BAD_ORDINAL = 0x0A  # unknown command, or TPM not running / not stopped
    SIZE = 0x17
    IOERROR = 0x1F
    BAD_LOCALITY = 0x3D
    RETRY = 0x800  # non-fatal, e.g. no savestate blob exists


TPM_SUCCESS: Final = Result.SUCCESS
TPM_BAD_PARAMETER: Final = Result.BAD_PARAMETER
TPM_FAIL: Final = Result.FAIL
TPM_BAD_ORDINAL: Final = Result.BAD_ORDINAL
TPM_SIZE: Final = Result.SIZE
TPM_IOERROR: Final = Result.IOERROR
TPM_BAD_LOCALITY: Final = Result.BAD_LOCALITY
TPM_RETRY: Final = Result.RETRY


class Capability(IntFlag):
    """``PTM_CAP_*`` bits answered by CMD_GET_CAPABILITY."""

    INIT = 1 << 0
    SHUTDOWN = 1 << 1
    GET_TPMESTABLISHED = 1 << 2
    SET_LOCALITY = 1 << 3
    HASHING = 1 << 4
    CANCEL_TPM_CMD = 1 << 5
    STORE_VOLATILE = 1 << 6
    RESET_TPMESTABLISHED = 1 << 7
    GET_STATEBLOB = 1 << 8
    SET_STATEBLOB = 1 << 9
    STOP = 1 << 10
    GET_CONFIG = 1 << 11
    SET_DATAFD = 1 << 12
    SET_BUFFERSIZE = 1 << 13
    GET_INFO = 1 << 14
    SEND_COMMAND_HEADER = 1 << 15  # TPM 2 only
    LOCK_STORAGE = 1 << 16  # swtpm >= 0.8


PTM_CAP_INIT: Final = Capability.INIT
PTM_CAP_SHUTDOWN: Final = Capability.SHUTDOWN
PTM_CAP_GET_TPMESTABLISHED: Final = Capability.GET_TPMESTABLISHED
PTM_CAP_SET_LOCALITY: Final = Capability.SET_LOCALITY
PTM_CAP_HASHING: Final = Capability.HASHING
PTM_CAP_CANCEL_TPM_CMD: Final = Capability.CANCEL_TPM_CMD
PTM_CAP_STORE_VOLATILE: Final = Capability.STORE_VOLATILE
PTM_CAP_RESET_TPMESTABLISHED: Final = Capability.RESET_TPMESTABLISHED
PTM_CAP_GET_STATEBLOB: Final = Capability.GET_STATEBLOB
PTM_CAP_SET_STATEBLOB: Final = Capability.SET_STATEBLOB
PTM_CAP_STOP: Final = Capability.STOP
PTM_CAP_GET_CONFIG: Final = Capability.GET_CONFIG
PTM_CAP_SET_DATAFD: Final = Capability.SET_DATAFD
PTM_CAP_SET_BUFFERSIZE: Final = Capability.SET_BUFFERSIZE
PTM_CAP_GET_INFO: Final = Capability.GET_INFO
PTM_CAP_SEND_COMMAND_HEADER: Final = Capability.SEND_COMMAND_HEADER
PTM_CAP_LOCK_STORAGE: Final = Capability.LOCK_STORAGE

#: What QEMU insists on before it uses a TPM 2 emulator (backends/tpm/tpm_emulator.c).
QEMU_REQUIRED_TPM2_CAPS: Final = (
    Capability.INIT
    | Capability.SHUTDOWN
    | Capability.GET_TPMESTABLISHED
    | Capability.SET_LOCALITY
    | Capability.RESET_TPMESTABLISHED
    | Capability.SET_DATAFD
    | Capability.STOP
    | Capability.SET_BUFFERSIZE
)


class InitFlag(IntFlag):
    """CMD_INIT ``init_flags``."""

    DELETE_VOLATILE = 1 << 0  # forget saved volatile state after reading it


PTM_INIT_FLAG_DELETE_VOLATILE: Final = InitFlag.DELETE_VOLATILE


class BlobType(IntEnum):
    """Which state blob CMD_GET_STATEBLOB / CMD_SET_STATEBLOB move."""

    PERMANENT = 1
    VOLATILE = 2
    SAVESTATE = 3


PTM_BLOB_TYPE_PERMANENT: Final = BlobType.PERMANENT
PTM_BLOB_TYPE_VOLATILE: Final = BlobType.VOLATILE
PTM_BLOB_TYPE_SAVESTATE: Final = BlobType.SAVESTATE


class StateFlag(IntFlag):
    """``state_flags`` of the state-blob commands."""

    DECRYPTED = 1  # GET request: return the blob without the file-key encryption
    ENCRYPTED = 2  # GET response / SET request: blob is migration-key encrypted


PTM_STATE_FLAG_DECRYPTED: Final = StateFlag.DECRYPTED
PTM_STATE_FLAG_ENCRYPTED: Final = StateFlag.ENCRYPTED


class ConfigFlag(IntFlag):
    """CMD_GET_CONFIG flags: which keys the TPM was started with."""

    FILE_KEY = 0x1
    MIGRATION_KEY = 0x2


PTM_CONFIG_FLAG_FILE_KEY: Final = ConfigFlag.FILE_KEY
PTM_CONFIG_FLAG_MIGRATION_KEY: Final = ConfigFlag.MIGRATION_KEY


class InfoFlag(IntFlag):
    """CMD_GET_INFO flags (libtpms ``TPMLIB_GetInfo``)."""

    TPM_SPECIFICATION = 0x01
    TPM_ATTRIBUTES = 0x02
    TPM_FEATURES = 0x04
    RUNTIME_ALGORITHMS = 0x08
    RUNTIME_COMMANDS = 0x10
    ACTIVE_PROFILE = 0x20
    AVAILABLE_PROFILES = 0x40
    RUNTIME_ATTRIBUTES = 0x80


#: swtpm refuses larger state blobs; we refuse them before buffering them.
MAX_STATE_BLOB_SIZE: Final = 512 * 1024
#: swtpm has no limit for hash data on sockets; a server must bound its memory.
MAX_HASH_DATA_SIZE: Final = 512 * 1024

_COMMAND_CODES: Final = frozenset(int(c) for c in Command)
_U8_MAX: Final = 0xFF
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
