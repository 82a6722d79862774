from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VtpmState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VTPM_STATE_UNSPECIFIED: _ClassVar[VtpmState]
    VTPM_STATE_STOPPED: _ClassVar[VtpmState]
    VTPM_STATE_RUNNING: _ClassVar[VtpmState]
VTPM_STATE_UNSPECIFIED: VtpmState
VTPM_STATE_STOPPED: VtpmState
VTPM_STATE_RUNNING: VtpmState

class Vtpm(_message.Message):
    __slots__ = ("uuid", "name", "engine", "state", "holder", "metadata", "created_unix", "control_socket")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CONTROL_SOCKET_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    engine: str
    state: VtpmState
    holder: str
    metadata: _containers.ScalarMap[str, str]
    created_unix: int
    control_socket: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., engine: _Optional[str] = ..., state: _Optional[_Union[VtpmState, str]] = ..., holder: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_unix: _Optional[int] = ..., control_socket: _Optional[str] = ...) -> None: ...

class CreateVtpmRequest(_message.Message):
    __slots__ = ("name", "engine", "metadata", "start")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    metadata: _containers.ScalarMap[str, str]
    start: bool
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., start: _Optional[bool] = ...) -> None: ...

class GetVtpmRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class ListVtpmsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVtpmsResponse(_message.Message):
    __slots__ = ("vtpms",)
    VTPMS_FIELD_NUMBER: _ClassVar[int]
    vtpms: _containers.RepeatedCompositeFieldContainer[Vtpm]
    def __init__(self, vtpms: _Optional[_Iterable[_Union[Vtpm, _Mapping]]] = ...) -> None: ...

class DeleteVtpmRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class DeleteVtpmResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartVtpmRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class StopVtpmRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class TransmitRequest(_message.Message):
    __slots__ = ("vtpm", "command", "locality")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    command: bytes
    locality: int
    def __init__(self, vtpm: _Optional[str] = ..., command: _Optional[bytes] = ..., locality: _Optional[int] = ...) -> None: ...

class TransmitResponse(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    def __init__(self, response: _Optional[bytes] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("attach", "command", "power_cycle")
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    POWER_CYCLE_FIELD_NUMBER: _ClassVar[int]
    attach: Attach
    command: TransmitRequest
    power_cycle: PowerCycle
    def __init__(self, attach: _Optional[_Union[Attach, _Mapping]] = ..., command: _Optional[_Union[TransmitRequest, _Mapping]] = ..., power_cycle: _Optional[_Union[PowerCycle, _Mapping]] = ...) -> None: ...

class Attach(_message.Message):
    __slots__ = ("vtpm", "holder")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    holder: str
    def __init__(self, vtpm: _Optional[str] = ..., holder: _Optional[str] = ...) -> None: ...

class PowerCycle(_message.Message):
    __slots__ = ("delete_volatile",)
    DELETE_VOLATILE_FIELD_NUMBER: _ClassVar[int]
    delete_volatile: bool
    def __init__(self, delete_volatile: _Optional[bool] = ...) -> None: ...

class AttachResponse(_message.Message):
    __slots__ = ("attached", "response", "power_cycled")
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    POWER_CYCLED_FIELD_NUMBER: _ClassVar[int]
    attached: Vtpm
    response: TransmitResponse
    power_cycled: PowerCycleDone
    def __init__(self, attached: _Optional[_Union[Vtpm, _Mapping]] = ..., response: _Optional[_Union[TransmitResponse, _Mapping]] = ..., power_cycled: _Optional[_Union[PowerCycleDone, _Mapping]] = ...) -> None: ...

class PowerCycleDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
