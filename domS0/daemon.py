"""DomS0's boot sequence and its orderly stop.

Boot: take the state folder's lock (one DomS0 per folder, or vTPMs would be
cloned), measure DomS0 itself into the host TPM, open the root of trust (the host
TPM releases the KEK only to the measured DomS0; a refusal stops the boot with its
message), load every vTPM record (refusing tampered ones by name), open the per-vTPM
control sockets, then serve gRPC. SIGTERM or SIGINT: stop
accepting, let in-flight commands finish, commit every vTPM, exit 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2

from vtpm_manager.ca import CAError, VtpmCA
from vtpm_manager.counter import CounterError
from vtpm_manager.durable import atomic_write
from vtpm_manager.engines import engine_factory
from vtpm_manager.instance import Instance
from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import state_manufacturer
from vtpm_manager.migration.qemu_blob import MIN_KEY_BYTES
from vtpm_manager.root import (
    ApprovalInvalid,
    PcrSelection,
    RootOfTrust,
    RootRefused,
    SoftwareRoot,
    TpmRoot,
)
from vtpm_manager.store import Record, StateStore, StateTampered

from . import selfmeasure
from .attestation_store import AttestationStore
from .attestor import Attestor
from .config import SOFTWARE_ROOT, Settings
from .finalizer import Finalizer
from .frontends.control_sockets import ControlSockets
from .imagestore import ImageStore
from .migration.artifacts import Artifacts
from .migration.identity import HostIdentity, IdentityError
from .migration.listener import MigrationRuntime, MigrationSetupError, start_migration
from .migration.qemu import QemuMigration
from .rpc.attestation import AttestationServicer
from .rpc.auth import TOKEN_FILE, AuthInterceptor, IssuedTokens, ensure_token
from .rpc.server import build_server
from .sealer import Sealer
from .security.gate import target_of
from .security.hooks import Action, Request
from .security.identity import IdentityError as TlsError
from .security.identity import ServerTls, ensure_tls, private_dir
from .security.principal import Principal, parse_principal
from .security.setup import Security, open_security
from .security.store import SecurityStateError
from .security.unix_relay import UnixPrincipals, UnixRelay

log = logging.getLogger("doms0")

LOCK_FILE = "doms0.lock"
LISTEN_FILE = "doms0.listen"
MIGRATION_LISTEN_FILE = "doms0.migration.listen"
RECORDS_DIR = "vtpms"
INTERNAL_DIR = "grpc-internal"      # in the run dir: the Unix relay's mutual-TLS target
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "[::1]", "localhost")


class StartupError(Exception):
    """DomS0 cannot start; the message says why and what to do."""


def _lock_state_dir(state_dir: Path) -> int:
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"another DomS0 is serving {state_dir}; stop it first (one DomS0 per state dir)"
        ) from None
    return fd


def select_root(settings: Settings) -> RootOfTrust:
    """The root of trust the settings name; the development root is refused in
    production, since anyone who reads the state folder could open every vTPM."""
    if settings.root_tpm == SOFTWARE_ROOT:
        if settings.production:
            raise StartupError(
                "the development root of trust (--root-tpm software) is refused with "
                "--production; provision the host TPM with `doms0 init --root-tpm TCTI` "
                "and serve with --root-tpm TCTI")
        return SoftwareRoot(settings.state_dir)
    try:
        return TpmRoot(settings.root_tpm, settings.state_dir)
    except RootRefused as exc:
        raise StartupError(str(exc)) from None


def measure_self(settings: Settings, root: RootOfTrust) -> selfmeasure.Measurement | None:
    """Extend DomS0's own digest into the root's measurement PCR (nothing to extend
    into for the software root)."""
    if root.measure_pcr is None:
        return None
    try:
        digest, files = selfmeasure.measurement_digest(settings.config_file,
                                                       settings.policy_files)
        return selfmeasure.measure_into(settings.root_tpm, root.measure_pcr,
                                        settings.measurement_log, digest, files)
    except (selfmeasure.MeasurementError, RootRefused) as exc:
        raise StartupError(f"DomS0 cannot measure itself: {exc}") from None


def open_root(settings: Settings) -> tuple[RootOfTrust, KeyEncryptionKey]:
    """Self-measure, then ask the root for the KEK; a refusal becomes a StartupError
    carrying the root's message (and the measurement log's hint, if it has one)."""
    root = select_root(settings)
    measurement = measure_self(settings, root)
    try:
        kek = root.open()
    except RootRefused as exc:
        hint = measurement.hint() if measurement is not None else ""
        raise StartupError(f"{exc}; {hint}" if hint else str(exc)) from None
    log.info("root of trust: %s", root.describe())
    return root, kek


def open_store(settings: Settings, root: RootOfTrust, kek: KeyEncryptionKey) -> StateStore:
    """The record store, bound to the root's monotonic counter: a state folder older
    than the counter (a restored copy) is refused here, before any vTPM loads."""
    counter = root.counter()
    store = StateStore(settings.state_dir / RECORDS_DIR, kek, counter)
    try:
        report = store.begin_epoch(adopt=settings.adopt_state)
    except (StateTampered, CounterError) as exc:
        raise StartupError(str(exc)) from None
    for note in report.notes:
        log.warning("rollback protection: %s", note)
    log.info("store epoch %d (counter: %s)", report.epoch, counter.origin)
    return store


def _engine_options(settings: Settings) -> dict[str, str]:
    if not settings.passthrough_tcti:
        return {}
    return {"host_tcti": settings.passthrough_tcti,
            "host_pcrs": settings.passthrough_host_pcrs}


def host_name(settings: Settings) -> str:
    return settings.host_name or socket.getfqdn()


def open_ca(settings: Settings, kek: KeyEncryptionKey) -> VtpmCA:
    """The vTPM CA: manufacturing certifies EKs with it, enrollment certifies AKs."""
    try:
        ca = VtpmCA.open(settings.state_dir, kek, host_name(settings))
    except CAError as exc:
        raise StartupError(str(exc)) from None
    log.info("vTPM CA: %s", ca.certificate.subject.rfc4514_string())
    return ca


def _manufacturer(settings: Settings, ca: VtpmCA) -> Callable[[Record], bytes | None]:
    """Every new vTPM is manufactured: EKs, EK and platform certificates from the
    vTPM CA. A passthrough vTPM is the host's TPM and already has its own."""
    make = state_manufacturer(ca, host_name(settings))

    def hook(record: Record) -> bytes | None:
        return None if record.engine == "passthrough" else make(record)

    return hook


def attestation_service(settings: Settings, manager: VtpmManager, ca: VtpmCA,
                        sockets: ControlSockets, artifacts: Artifacts, security: Security,
                        root: RootOfTrust | None = None) -> AttestationServicer:
    """Finalizer and attestor, sharing the image store and the per-vTPM sidecars
    (removed with their vTPM). The control sockets measure every boot of a built
    domain through the finalizer."""
    records, images = artifacts.records, artifacts.images
    manager.add_listener(lambda event, instance: records.forget(instance.record.uuid)
                         if event == "deleted" else None)
    finalizer = Finalizer(manager, ca, host_name(settings), records, sockets.path_of, images)
    sockets.boot_measurer = finalizer.measure_boot
    attestor = Attestor(manager, ca, records, root, lambda: security.policy_digest)
    return AttestationServicer(finalizer, attestor, images, sockets.path_of, manager,
                               security.gate, Sealer(manager))


def open_security_for(settings: Settings, kek: KeyEncryptionKey, manager: VtpmManager
                      ) -> Security:
    """The hooks' decision side: modules, ACM policy and labels, groups, audit log."""
    try:
        claim, _ = selfmeasure.measurement_claim(settings.config_file, settings.policy_files)
        return open_security(
            settings.state_dir, kek, manager, settings.security_modules,
            (claim.code_digest, claim.digest()), permissive=settings.permissive,
            audit_log=settings.audit_log, audit_permits=settings.audit_permits)
    except (SecurityStateError, selfmeasure.MeasurementError) as exc:
        raise StartupError(f"security state: {exc}") from None


def boot_guard(security: Security) -> Callable[[Instance], str | None]:
    """At start, a vTPM that was running restarts only if the policy lets it run here
    (Chinese Wall, approval groups), as the operating system would ask it."""
    system = Principal("admin", "doms0", "start")

    def may_start(instance: Instance) -> str | None:
        decision = security.gate.server.decide(
            Request(system, Action.START, target_of(instance)))
        return None if decision.permitted else f"{decision.module}: {decision.rule}"

    return may_start


def migration_runtime(settings: Settings, manager: VtpmManager, root: RootOfTrust,
                      artifacts: Artifacts, security: Security) -> MigrationRuntime | None:
    """The migration listener, when one is configured (its address file too)."""
    if not settings.migration_listen:
        return None
    assert settings.tls_cert and settings.tls_key and settings.tls_ca   # validate()
    try:
        identity = HostIdentity.load(settings.tls_cert, settings.tls_key, settings.tls_ca)
        claim, _ = selfmeasure.measurement_claim(settings.config_file, settings.policy_files)
        runtime = start_migration(settings.migration_listen, identity, manager, root,
                                  artifacts, claim, settings.measurement_log,
                                  settings.migration_code_digests, security)
    except (IdentityError, MigrationSetupError, selfmeasure.MeasurementError) as exc:
        raise StartupError(str(exc)) from None
    atomic_write(settings.state_dir / MIGRATION_LISTEN_FILE,
                 (runtime.host.address + "\n").encode(), mode=0o644)
    return runtime


def qemu_migration(settings: Settings, migration: MigrationRuntime, artifacts: Artifacts,
                   security: Security) -> QemuMigration | None:
    """State blobs in QEMU's migration stream, when a shared key is configured."""
    if settings.qemu_migration_key is None:
        return None
    try:
        key = settings.qemu_migration_key.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the QEMU migration key: {exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise StartupError(f"the QEMU migration key {settings.qemu_migration_key} has "
                           f"{len(key)} bytes; use {MIN_KEY_BYTES} or more random bytes")
    return QemuMigration(migration.host.identity, key, artifacts, migration.host.address,
                         security.gate)


def check_listen(settings: Settings) -> None:
    """Plain TCP is allowed on loopback only, and only when asked for."""
    if settings.listen.startswith("unix:") or not settings.insecure_loopback:
        return
    host = settings.listen.rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        raise StartupError(f"--insecure-loopback serves plain TCP on loopback only, not on "
                           f"{host}; listen on 127.0.0.1:PORT, or drop the flag for mutual "
                           f"TLS (doms0 issue PRINCIPAL makes client certificates)")


def ensure_identities(settings: Settings) -> None:
    """The callers CA and DomS0's server certificate (created once, never replaced)."""
    try:
        if ensure_tls(settings.state_dir, host_name(settings)):
            log.info("created the callers CA and server certificate in %s/tls",
                     settings.state_dir)
    except (TlsError, OSError) as exc:
        raise StartupError(f"cannot create DomS0's TLS material: {exc}") from None


class Listener:
    """How callers reach DomS0 and prove who they are: the gRPC bind address, its
    credentials (None: plain TCP), the interceptor, and the Unix relay if any."""

    def __init__(self, settings: Settings, run_root: Path) -> None:
        state_dir = settings.state_dir
        ensure_identities(settings)
        try:
            tls = ServerTls.load(state_dir)
        except TlsError as exc:
            raise StartupError(str(exc)) from None
        self.relay: UnixRelay | None = None
        self.credentials: grpc.ServerCredentials | None = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem,
            require_client_auth=True)
        token = ensure_token(state_dir)
        if settings.listen.startswith("unix:"):
            internal = private_dir(run_root / INTERNAL_DIR) / "grpc.sock"
            self.bind = f"unix:{internal}"
            principals = UnixPrincipals(
                {key: parse_principal(value) for key, value in settings.unix_principals},
                self_admin=settings.unix_self_admin)
            self.relay = UnixRelay(Path(settings.listen[len("unix:"):]), internal, tls.ca,
                                   tls.ca_pem, principals)
            self.interceptor = AuthInterceptor(tls.ca)
        elif settings.insecure_loopback:
            self.bind = settings.listen
            self.credentials = None
            self.interceptor = AuthInterceptor(
                tls.ca, admin_token=token, token_path=state_dir / TOKEN_FILE,
                issued=IssuedTokens(state_dir))
            log.warning("INSECURE: serving plain TCP on %s (--insecure-loopback): callers "
                        "authenticate with bearer tokens only, and any local process can "
                        "connect; use mutual TLS outside development", settings.listen)
        else:
            self.bind = settings.listen
            self.interceptor = AuthInterceptor(tls.ca)

    def start(self) -> None:
        if self.relay is not None:
            try:
                self.relay.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {self.relay.path}: {exc}") from None

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()


def serve(settings: Settings) -> int:
    """Run DomS0 until SIGTERM/SIGINT; returns the process exit code."""
    state_dir = settings.state_dir
    check_listen(settings)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = _lock_state_dir(state_dir)
    try:
        root, kek = open_root(settings)
    except BaseException:
        os.close(lock_fd)
        raise
    own_run_root = settings.run_dir is None
    run_root = settings.run_dir or Path(tempfile.mkdtemp(prefix="doms0-"))
    run_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store = open_store(settings, root, kek)
        ca = open_ca(settings, kek)
        manager = VtpmManager(store, run_root, settings.default_engine,
                              factory=engine_factory(_engine_options(settings)),
                              manufacturer=_manufacturer(settings, ca))
        listener = Listener(settings, run_root)
    except BaseException:
        if own_run_root:
            shutil.rmtree(run_root, ignore_errors=True)
        os.close(lock_fd)
        raise
    security = open_security_for(settings, kek, manager)
    failures = manager.load(may_start=boot_guard(security))
    log.info("loaded %d vTPM(s), refused %d", len(manager.list()), len(failures))

    sockets = ControlSockets(manager, run_root, security.gate)
    artifacts = Artifacts(AttestationStore(state_dir), ImageStore(state_dir))
    migration = migration_runtime(settings, manager, root, artifacts, security)
    server, health, port = build_server(
        manager, listener.bind, listener.interceptor, sockets.path_of, security,
        attestation_service(settings, manager, ca, sockets, artifacts, security, root),
        migration.host if migration is not None else None,
        credentials=listener.credentials,
    )
    stopping = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No logging here: a handler that interrupts a thread holding the logging
        # lock would wait on it forever. The main loop logs once it wakes.
        received.append(signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if migration is not None:
        sockets.qemu = qemu_migration(settings, migration, artifacts, security)
        migration.start()
    sockets.open_all()
    server.start()
    address = settings.listen if settings.listen.startswith("unix:") else \
        f"{settings.listen.rsplit(':', 1)[0]}:{port}"
    try:
        listener.start()
        atomic_write(state_dir / LISTEN_FILE, (address + "\n").encode(), mode=0o644)
        log.info("DomS0 serving on %s (state %s, run dir %s)", address, state_dir, run_root)
        # Wake every second: the main thread runs the signal handlers, and a wait that
        # never times out can miss a wake-up that raced with it.
        while not stopping.wait(1.0):
            pass
        log.info("received %s; stopping", received[0] if received else "a stop request")
    finally:
        health.enter_graceful_shutdown()
        for name in ("",):
            health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        server.stop(settings.grace_seconds).wait()
        listener.stop()
        if migration is not None:
            migration.stop(settings.grace_seconds)
        sockets.close_all()
        manager.shutdown()
        try:
            store.close_epoch()
        except (OSError, CounterError, StateTampered) as exc:
            log.error("could not close store epoch %d (%s): the next start will treat "
                      "this stop as unclean", store.epoch, exc)
        (state_dir / LISTEN_FILE).unlink(missing_ok=True)
        if own_run_root:
            shutil.rmtree(run_root, ignore_errors=True)
        os.close(lock_fd)
        log.info("DomS0 stopped")
    return 0


def provision(settings: Settings, force: bool = False) -> RootOfTrust:
    """``doms0 init``: measure DomS0, then seal a fresh KEK to the host TPM and define
    its NV counter. The state folder is locked meanwhile, so a serving DomS0 never
    sees its root replaced underneath it. In PCR mode the root is opened once at the
    end, so a policy that cannot be satisfied is found now, not at the next start."""
    state_dir = settings.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = _lock_state_dir(state_dir)
    try:
        if settings.root_tpm == SOFTWARE_ROOT:
            root: RootOfTrust = SoftwareRoot(state_dir)
            root.open()
            ensure_identities(settings)
            return root
        if (state_dir / "root" / "root.json").exists() and not force:
            raise StartupError(f"a host TPM root is already provisioned in {state_dir}/root; "
                               f"its KEK protects every vTPM there, so doms0 init will not "
                               f"replace it (rerun with --force to replace it and lose "
                               f"access to the existing vTPM state)")
        approval_pem = None
        if settings.approval_key is not None:
            try:
                approval_pem = settings.approval_key.read_bytes()
            except OSError as exc:
                raise StartupError(f"cannot read the approval key: {exc}") from None
        digest, files = selfmeasure.measurement_digest(settings.config_file,
                                                       settings.policy_files)
        selfmeasure.measure_into(settings.root_tpm, settings.measure_pcr,
                                 settings.measurement_log, digest, files)
        tpm_root = TpmRoot.provision(
            settings.root_tpm, state_dir, host_pcrs=PcrSelection.parse(settings.host_pcrs),
            measure_pcr=settings.measure_pcr, approval_key_pem=approval_pem,
            nv_index=settings.nv_index, srk_handle=settings.srk_handle, force=force)
        if tpm_root.record.mode == "pcr":
            tpm_root.open()
        ensure_identities(settings)
        return tpm_root
    except (RootRefused, ApprovalInvalid, selfmeasure.MeasurementError) as exc:
        raise StartupError(str(exc)) from None
    finally:
        os.close(lock_fd)
