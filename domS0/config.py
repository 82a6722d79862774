"""DomS0 settings: built-in defaults, then a TOML file, then command-line flags."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from domS0.security.principal import parse_principal
from vtpm_manager.root.policy import MAX_PCR, PcrSelection, SelectionError

DEFAULT_LISTEN = "127.0.0.1:7340"
SOFTWARE_ROOT = "software"


class ConfigError(Exception):
    """A setting is missing, unknown or of the wrong type; the message says which."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path("/var/lib/doms0")
    listen: str = DEFAULT_LISTEN
    run_dir: Path | None = None  # sockets and engine scratch; a fresh temp dir if unset
    default_engine: str = "builtin"
    log_format: str = "text"  # "text" or "json"
    log_level: str = "INFO"
    grace_seconds: float = 5.0
    # Root of trust: "software" (development) or a tpm2-tss TCTI string for the host
    # TPM, e.g. "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321".
    root_tpm: str = SOFTWARE_ROOT
    production: bool = False  # refuse the development root
    # Self-measurement: the measurement PCR is recorded by `doms0 init`; the log is the
    # runtime event log that lets a restart in the same host boot skip a second extend.
    measure_pcr: int = 15
    measurement_log: Path = Path("/run/doms0/measurements.log")
    policy_files: tuple[Path, ...] = ()  # security policy files DomS0 measures
    # Provisioning (`doms0 init`): host PCRs the KEK is sealed to (plus measure_pcr),
    # an approval public key for PolicyAuthorize, the NV counter index, a persistent SRK.
    host_pcrs: str = "sha256:0,1,2,3,7"
    approval_key: Path | None = None
    nv_index: int = 0x01500020
    srk_handle: int | None = None
    # Rollback protection: trust the records on disk once, rebuilding the MANIFEST
    # (first start of an older store, or a deliberate restore of a backup).
    adopt_state: bool = False
    # Manufacturing: a name for this host in the vTPM CA's certificates (default: FQDN).
    host_name: str = ""
    # The passthrough engine: the host TPM's TCTI (behind a resource manager) and the
    # host PCRs a passthrough vTPM may not extend or reset.
    passthrough_tcti: str = ""
    passthrough_host_pcrs: str = "0-15"
    # Migration between hosts: a mutual-TLS listener for other DomS0s, this host's
    # certificate and key from the hosts CA, the CA(s) trusted for peers, and the DomS0
    # code measurements a destination may run ("self": the same code as this one).
    migration_listen: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    migration_code_digests: tuple[str, ...] = ("self",)
    # A secret (32 bytes or more) shared by the hosts QEMU migrates VMs between: with it,
    # control-socket state blobs carry the vTPM inside QEMU's own migration stream.
    qemu_migration_key: Path | None = None
    # Access control (XSM-style hooks): the security modules, primary first ("dummy",
    # "acm", or "acm,dummy"); permissive logs denials without enforcing them; the audit
    # log records every denial (and every permit with audit_permits).
    security_modules: str = "dummy"
    permissive: bool = False
    audit_log: Path | None = None  # default STATE_DIR/security/audit.log
    audit_permits: bool = False
    # Callers' identities: TCP listeners use mutual TLS with the callers CA in
    # STATE_DIR/tls unless insecure_loopback (plain TCP on loopback only, bearer
    # tokens). On a unix:PATH listener the peer's uid/gid name the principal:
    # {"uid:N" | "gid:N" = "admin:NAME" | "domain:NAME" | "peer:HOST"}, uid entries
    # first; DomS0's own uid is admin:local unless unix_self_admin is false.
    insecure_loopback: bool = False
    unix_principals: tuple[tuple[str, str], ...] = ()
    unix_self_admin: bool = True
    config_file: Path | None = None  # set from --config; measured, never read from TOML

    def validate(self) -> Settings:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', not {self.log_format!r}")
        if not (self.listen.startswith("unix:") or ":" in self.listen):
            raise ConfigError(f"listen must be HOST:PORT or unix:PATH, not {self.listen!r}")
        if self.default_engine not in ("builtin", "swtpm"):
            raise ConfigError(f"default_engine must be builtin or swtpm, not "
                              f"{self.default_engine!r} (passthrough is chosen per vTPM)")
        if not 0 <= self.measure_pcr <= MAX_PCR:
            raise ConfigError(f"measure_pcr must be 0..{MAX_PCR}, not {self.measure_pcr}")
        try:
            PcrSelection.parse(self.host_pcrs)
        except SelectionError as exc:
            raise ConfigError(f"host_pcrs: {exc}") from None
        if self.migration_listen and None in (self.tls_cert, self.tls_key, self.tls_ca):
            raise ConfigError("migration_listen needs tls_cert, tls_key and tls_ca (the "
                              "host's certificate from the hosts CA, its key, the CA)")
        modules = self.security_modules.split(",")
        if not 1 <= len(modules) <= 2 or any(m not in ("dummy", "acm") for m in modules):
            raise ConfigError(f"security_modules must be one or two of dummy, acm "
                              f"(primary first), not {self.security_modules!r}")
        if self.qemu_migration_key is not None and not self.migration_listen:
            raise ConfigError("qemu_migration_key needs migration_listen (and its TLS "
                              "material): the destination claims the vTPM from the source")
        for key, value in self.unix_principals:
            if not re.fullmatch(r"(uid|gid):[0-9]+", key):
                raise ConfigError(f"unix_principals: {key!r} is not uid:N or gid:N")
            try:
                parse_principal(value)
            except ValueError as exc:
                raise ConfigError(f"unix_principals {key!r}: {exc}") from None
        if self.insecure_loopback and self.listen.startswith("unix:"):
            raise ConfigError("insecure_loopback is for a TCP listen address on loopback; "
                              "a unix:PATH listener authenticates by peer credentials")
        for digest in self.migration_code_digests:
            if digest != "self" and not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(f"migration_code_digests: {digest!r} is neither 'self' "
                                  "nor a SHA-256 in hex (doms0 measure prints it)")
        return self


_PATHS = {"state_dir", "run_dir", "approval_key", "measurement_log", "tls_cert", "tls_key",
          "tls_ca", "qemu_migration_key", "audit_log"}
_INTS = {"measure_pcr", "nv_index", "srk_handle"}
_BOOLS = {"production", "adopt_state", "permissive", "audit_permits", "insecure_loopback",
          "unix_self_admin"}


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Merge defaults, the TOML file (table ``[doms0]`` or top level) and overrides."""
    settings = Settings(config_file=config_file)
    known = {f.name for f in fields(Settings)} - {"config_file"}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from exc
        data = data.get("doms0", data)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{config_file}: unknown settings {', '.join(sorted(unknown))}")
        settings = replace(settings, **_coerce(data))
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(settings, **_coerce(given)).validate()


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _PATHS:
            out[key] = Path(value)
        elif key == "grace_seconds":
            out[key] = float(value)
        elif key in _INTS:
            out[key] = _integer(key, value)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(f"setting {key} must be true or false, not {value!r}")
            out[key] = value
        elif key == "unix_principals":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ConfigError('setting unix_principals must be a table of strings, e.g. '
                                  '{ "uid:1000" = "domain:vm1" }')
            out[key] = tuple(sorted(value.items()))
        elif key in ("policy_files", "migration_code_digests"):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"setting {key} must be a list of strings")
            out[key] = tuple(Path(v) for v in value) if key == "policy_files" \
                else tuple(v.lower() for v in value)
        elif not isinstance(value, str):
            raise ConfigError(f"setting {key} must be a string, not {value!r}")
        else:
            out[key] = value
    return out


def _integer(key: str, value: Any) -> int:
    """An int, or a string in any base Python reads ("15", "0x01500020")."""
    if isinstance(value, bool):
        raise ConfigError(f"setting {key} must be a number, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        raise ConfigError(f"setting {key} must be a number, not {value!r}") from None
