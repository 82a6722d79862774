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
    VTPM_STATE_MIGRATING: _ClassVar[VtpmState]
    VTPM_STATE_MIGRATED: _ClassVar[VtpmState]

class ImageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_KIND_UNSPECIFIED: _ClassVar[ImageKind]
    IMAGE_KIND_KERNEL: _ClassVar[ImageKind]
    IMAGE_KIND_INITRD: _ClassVar[ImageKind]
VTPM_STATE_UNSPECIFIED: VtpmState
VTPM_STATE_STOPPED: VtpmState
VTPM_STATE_RUNNING: VtpmState
VTPM_STATE_MIGRATING: VtpmState
VTPM_STATE_MIGRATED: VtpmState
IMAGE_KIND_UNSPECIFIED: ImageKind
IMAGE_KIND_KERNEL: ImageKind
IMAGE_KIND_INITRD: ImageKind

class Vtpm(_message.Message):
    __slots__ = ("uuid", "name", "engine", "state", "holder", "metadata", "created_unix", "control_socket", "migration")
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
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    engine: str
    state: VtpmState
    holder: str
    metadata: _containers.ScalarMap[str, str]
    created_unix: int
    control_socket: str
    migration: MigrationInfo
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., engine: _Optional[str] = ..., state: _Optional[_Union[VtpmState, str]] = ..., holder: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_unix: _Optional[int] = ..., control_socket: _Optional[str] = ..., migration: _Optional[_Union[MigrationInfo, _Mapping]] = ...) -> None: ...

class MigrationInfo(_message.Message):
    __slots__ = ("state", "peer_address", "peer_host", "generation", "migration_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_HOST_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    state: str
    peer_address: str
    peer_host: str
    generation: int
    migration_id: str
    def __init__(self, state: _Optional[str] = ..., peer_address: _Optional[str] = ..., peer_host: _Optional[str] = ..., generation: _Optional[int] = ..., migration_id: _Optional[str] = ...) -> None: ...

class MigrateVtpmRequest(_message.Message):
    __slots__ = ("vtpm", "destination")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    destination: str
    def __init__(self, vtpm: _Optional[str] = ..., destination: _Optional[str] = ...) -> None: ...

class MigrateProgress(_message.Message):
    __slots__ = ("step", "message", "percent")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    step: str
    message: str
    percent: int
    def __init__(self, step: _Optional[str] = ..., message: _Optional[str] = ..., percent: _Optional[int] = ...) -> None: ...

class CreateVtpmRequest(_message.Message):
    __slots__ = ("name", "engine", "metadata", "start", "incoming_uuid")
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
    INCOMING_UUID_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    metadata: _containers.ScalarMap[str, str]
    start: bool
    incoming_uuid: str
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., start: _Optional[bool] = ..., incoming_uuid: _Optional[str] = ...) -> None: ...

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

class BuildRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: BuildHeader
    chunk: ImageChunk
    def __init__(self, header: _Optional[_Union[BuildHeader, _Mapping]] = ..., chunk: _Optional[_Union[ImageChunk, _Mapping]] = ...) -> None: ...

class BuildHeader(_message.Message):
    __slots__ = ("vtpm", "cmdline", "launch_config_json", "force", "create_if_missing", "engine")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    cmdline: str
    launch_config_json: str
    force: bool
    create_if_missing: bool
    engine: str
    def __init__(self, vtpm: _Optional[str] = ..., cmdline: _Optional[str] = ..., launch_config_json: _Optional[str] = ..., force: _Optional[bool] = ..., create_if_missing: _Optional[bool] = ..., engine: _Optional[str] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("kind", "data")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    kind: ImageKind
    data: bytes
    def __init__(self, kind: _Optional[_Union[ImageKind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class BuildResponse(_message.Message):
    __slots__ = ("manifest_json", "event_log", "qemu_args", "vtpm", "enrollment")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    QEMU_ARGS_FIELD_NUMBER: _ClassVar[int]
    VTPM_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    event_log: bytes
    qemu_args: _containers.RepeatedScalarFieldContainer[str]
    vtpm: Vtpm
    enrollment: str
    def __init__(self, manifest_json: _Optional[str] = ..., event_log: _Optional[bytes] = ..., qemu_args: _Optional[_Iterable[str]] = ..., vtpm: _Optional[_Union[Vtpm, _Mapping]] = ..., enrollment: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("manifest_json",)
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    def __init__(self, manifest_json: _Optional[str] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("vtpm", "nonce", "pcr_selection", "deep")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PCR_SELECTION_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    nonce: bytes
    pcr_selection: str
    deep: bool
    def __init__(self, vtpm: _Optional[str] = ..., nonce: _Optional[bytes] = ..., pcr_selection: _Optional[str] = ..., deep: _Optional[bool] = ...) -> None: ...

class DeepQuote(_message.Message):
    __slots__ = ("encoded", "host_ak_public_pem", "ek_name", "policy_digest", "host_pcr_selection", "measure_pcr")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    HOST_AK_PUBLIC_PEM_FIELD_NUMBER: _ClassVar[int]
    EK_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    HOST_PCR_SELECTION_FIELD_NUMBER: _ClassVar[int]
    MEASURE_PCR_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    host_ak_public_pem: str
    ek_name: bytes
    policy_digest: bytes
    host_pcr_selection: str
    measure_pcr: int
    def __init__(self, encoded: _Optional[bytes] = ..., host_ak_public_pem: _Optional[str] = ..., ek_name: _Optional[bytes] = ..., policy_digest: _Optional[bytes] = ..., host_pcr_selection: _Optional[str] = ..., measure_pcr: _Optional[int] = ...) -> None: ...

class PcrValue(_message.Message):
    __slots__ = ("bank", "pcr", "value")
    BANK_FIELD_NUMBER: _ClassVar[int]
    PCR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    bank: str
    pcr: int
    value: bytes
    def __init__(self, bank: _Optional[str] = ..., pcr: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("vtpm_uuid", "nonce", "pcr_selection", "attest", "signature", "pcrs", "ak_public_pem", "certificates", "event_log", "deep_quote")
    VTPM_UUID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PCR_SELECTION_FIELD_NUMBER: _ClassVar[int]
    ATTEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    AK_PUBLIC_PEM_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    DEEP_QUOTE_FIELD_NUMBER: _ClassVar[int]
    vtpm_uuid: str
    nonce: bytes
    pcr_selection: str
    attest: bytes
    signature: bytes
    pcrs: _containers.RepeatedCompositeFieldContainer[PcrValue]
    ak_public_pem: str
    certificates: _containers.RepeatedScalarFieldContainer[str]
    event_log: bytes
    deep_quote: DeepQuote
    def __init__(self, vtpm_uuid: _Optional[str] = ..., nonce: _Optional[bytes] = ..., pcr_selection: _Optional[str] = ..., attest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., pcrs: _Optional[_Iterable[_Union[PcrValue, _Mapping]]] = ..., ak_public_pem: _Optional[str] = ..., certificates: _Optional[_Iterable[str]] = ..., event_log: _Optional[bytes] = ..., deep_quote: _Optional[_Union[DeepQuote, _Mapping]] = ...) -> None: ...

class GetEventLogRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class GetEventLogResponse(_message.Message):
    __slots__ = ("event_log",)
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    event_log: bytes
    def __init__(self, event_log: _Optional[bytes] = ...) -> None: ...

class GetCertificatesRequest(_message.Message):
    __slots__ = ("vtpm",)
    VTPM_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    def __init__(self, vtpm: _Optional[str] = ...) -> None: ...

class GetCertificatesResponse(_message.Message):
    __slots__ = ("ek_certificates", "ak_certificate", "ca_certificate", "ak_public_pem")
    EK_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    AK_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    AK_PUBLIC_PEM_FIELD_NUMBER: _ClassVar[int]
    ek_certificates: _containers.RepeatedScalarFieldContainer[str]
    ak_certificate: str
    ca_certificate: str
    ak_public_pem: str
    def __init__(self, ek_certificates: _Optional[_Iterable[str]] = ..., ak_certificate: _Optional[str] = ..., ca_certificate: _Optional[str] = ..., ak_public_pem: _Optional[str] = ...) -> None: ...

class CurrentPcrPolicy(_message.Message):
    __slots__ = ("pcr_selection",)
    PCR_SELECTION_FIELD_NUMBER: _ClassVar[int]
    pcr_selection: str
    def __init__(self, pcr_selection: _Optional[str] = ...) -> None: ...

class PredictedPcrPolicy(_message.Message):
    __slots__ = ("pcr_selection", "values")
    PCR_SELECTION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    pcr_selection: str
    values: _containers.RepeatedCompositeFieldContainer[PcrValue]
    def __init__(self, pcr_selection: _Optional[str] = ..., values: _Optional[_Iterable[_Union[PcrValue, _Mapping]]] = ...) -> None: ...

class AuthorizedPcrPolicy(_message.Message):
    __slots__ = ("approval_public_key_pem", "revocable")
    APPROVAL_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    REVOCABLE_FIELD_NUMBER: _ClassVar[int]
    approval_public_key_pem: str
    revocable: bool
    def __init__(self, approval_public_key_pem: _Optional[str] = ..., revocable: _Optional[bool] = ...) -> None: ...

class SealRequest(_message.Message):
    __slots__ = ("vtpm", "secret", "current", "predicted", "authorized", "auth")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZED_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    secret: bytes
    current: CurrentPcrPolicy
    predicted: PredictedPcrPolicy
    authorized: AuthorizedPcrPolicy
    auth: bytes
    def __init__(self, vtpm: _Optional[str] = ..., secret: _Optional[bytes] = ..., current: _Optional[_Union[CurrentPcrPolicy, _Mapping]] = ..., predicted: _Optional[_Union[PredictedPcrPolicy, _Mapping]] = ..., authorized: _Optional[_Union[AuthorizedPcrPolicy, _Mapping]] = ..., auth: _Optional[bytes] = ...) -> None: ...

class SealResponse(_message.Message):
    __slots__ = ("blob_json",)
    BLOB_JSON_FIELD_NUMBER: _ClassVar[int]
    blob_json: str
    def __init__(self, blob_json: _Optional[str] = ...) -> None: ...

class UnsealRequest(_message.Message):
    __slots__ = ("vtpm", "blob_json", "signed_policy_json", "auth")
    VTPM_FIELD_NUMBER: _ClassVar[int]
    BLOB_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNED_POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    vtpm: str
    blob_json: str
    signed_policy_json: str
    auth: bytes
    def __init__(self, vtpm: _Optional[str] = ..., blob_json: _Optional[str] = ..., signed_policy_json: _Optional[str] = ..., auth: _Optional[bytes] = ...) -> None: ...

class UnsealResponse(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: bytes
    def __init__(self, secret: _Optional[bytes] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("source_nonce", "vtpm_uuid", "generation", "vtpm_name", "domain", "group")
    SOURCE_NONCE_FIELD_NUMBER: _ClassVar[int]
    VTPM_UUID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VTPM_NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    source_nonce: bytes
    vtpm_uuid: str
    generation: int
    vtpm_name: str
    domain: str
    group: str
    def __init__(self, source_nonce: _Optional[bytes] = ..., vtpm_uuid: _Optional[str] = ..., generation: _Optional[int] = ..., vtpm_name: _Optional[str] = ..., domain: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("session", "proof", "host_name", "host_certificate_pem")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    session: bytes
    proof: bytes
    host_name: str
    host_certificate_pem: str
    def __init__(self, session: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., host_name: _Optional[str] = ..., host_certificate_pem: _Optional[str] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("session", "package")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    session: bytes
    package: bytes
    def __init__(self, session: _Optional[bytes] = ..., package: _Optional[bytes] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("vtpm_uuid",)
    VTPM_UUID_FIELD_NUMBER: _ClassVar[int]
    vtpm_uuid: str
    def __init__(self, vtpm_uuid: _Optional[str] = ...) -> None: ...

class MigrationRef(_message.Message):
    __slots__ = ("migration_id", "vtpm_uuid")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    VTPM_UUID_FIELD_NUMBER: _ClassVar[int]
    migration_id: bytes
    vtpm_uuid: str
    def __init__(self, migration_id: _Optional[bytes] = ..., vtpm_uuid: _Optional[str] = ...) -> None: ...

class MigrationStatus(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class LoadPolicyRequest(_message.Message):
    __slots__ = ("compiled",)
    COMPILED_FIELD_NUMBER: _ClassVar[int]
    compiled: bytes
    def __init__(self, compiled: _Optional[bytes] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("loaded", "name", "version", "digest", "summary", "modules", "permissive")
    LOADED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    PERMISSIVE_FIELD_NUMBER: _ClassVar[int]
    loaded: bool
    name: str
    version: str
    digest: str
    summary: str
    modules: str
    permissive: bool
    def __init__(self, loaded: _Optional[bool] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., digest: _Optional[str] = ..., summary: _Optional[str] = ..., modules: _Optional[str] = ..., permissive: _Optional[bool] = ...) -> None: ...

class SetLabelRequest(_message.Message):
    __slots__ = ("kind", "name", "label")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    label: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class ListLabelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Label(_message.Message):
    __slots__ = ("kind", "name", "label")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    label: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class LabelsResponse(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class CreateGroupRequest(_message.Message):
    __slots__ = ("name", "approval_public_key_pem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    approval_public_key_pem: str
    def __init__(self, name: _Optional[str] = ..., approval_public_key_pem: _Optional[str] = ...) -> None: ...

class LoadApprovalListRequest(_message.Message):
    __slots__ = ("list_json",)
    LIST_JSON_FIELD_NUMBER: _ClassVar[int]
    list_json: str
    def __init__(self, list_json: _Optional[str] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GroupInfo(_message.Message):
    __slots__ = ("name", "sequence", "measurements", "approval_key_fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    sequence: int
    measurements: _containers.RepeatedScalarFieldContainer[str]
    approval_key_fingerprint: str
    def __init__(self, name: _Optional[str] = ..., sequence: _Optional[int] = ..., measurements: _Optional[_Iterable[str]] = ..., approval_key_fingerprint: _Optional[str] = ...) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupInfo]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupInfo, _Mapping]]] = ...) -> None: ...
