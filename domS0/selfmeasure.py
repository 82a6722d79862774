"""DomS0 measures itself into a host PCR before it asks the host TPM for its keys.

The digest covers DomS0's own code (every file of the installed ``domS0``,
``vtpm_manager``, ``tpm_emulator`` and ``measure`` packages, sorted by path, each
hashed as path and content), its configuration file and its policy files. It is
extended into one host PCR (default 15) and written to a runtime event log, so the
KEK sealed to that PCR opens only for the DomS0 that was measured.

Why PCR 15: PCRs 8-15 belong to the static OS (TCG PC Client PFP §3.3.4), can be
extended from locality 0 and cannot be reset until the host reboots (unlike 16,
the debug PCR, and 23, the application PCR, which anyone may reset). Firmware, shim,
GRUB, IMA and systemd-stub use 0-14; systemd uses 15 only for "system identity"
measurements early in boot, before services start, which the runtime log records as
the PCR's starting value. Pick another with ``measure_pcr`` if a host uses 15
differently.

Restarting within one host boot. A PCR cannot be reset, so a second extend of the
same digest would move it away from the sealed value. The runtime log (JSON lines,
default ``/run/doms0/measurements.log``, on tmpfs) says what DomS0 extended this boot:
a ``start`` line with the PCR's value when the log began, then one ``extend`` line
per measurement. At start, under a lock:

* if replaying the log from its start value gives the PCR's current value, the log
  tells the truth about this boot: if it already holds this digest, DomS0 does not
  extend again (a restart); otherwise it extends (another DomS0 ran first: the PCR
  now names both, the policy fails, and the refusal says so);
* if it does not replay (no log, a log from an earlier boot, e.g. after a host power
  cycle when /run was not cleared, or an unlogged extend), the log is stale: it is
  kept as ``.stale``, a new one starts at the current value, and DomS0 extends.

The log is never trusted for anything but this decision; the PCR itself is what the
sealed policy checks, so a forged log can at worst make DomS0 skip an extend it
needed, and then the PCR does not match and the keys stay sealed. The ``extend`` line
is written before the extend: a crash between them leaves a log that does not replay,
which is handled as stale, never as a second extend.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from vtpm_manager.migration.proof import MeasurementClaim, MeasurementLog
from vtpm_manager.root.host import connect, extend_pcr, read_pcrs
from vtpm_manager.root.policy import PcrSelection, extend

log = logging.getLogger("doms0.selfmeasure")

LOG_VERSION = 1
DEFAULT_LOG = Path("/run/doms0/measurements.log")
DEFAULT_PCR = 15
BANK = "sha256"
CODE_PACKAGES = ("domS0", "vtpm_manager", "tpm_emulator", "measure")
EVENT = "doms0 self-measurement"
_DOMAIN = b"vtpm-stack doms0 self-measurement v2\x00"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


class MeasurementError(Exception):
    """DomS0 could not measure itself (unreadable file, log or host TPM)."""


@dataclass(frozen=True)
class Measurement:
    """What the self-measurement did, for the log and for a refusal's hint."""

    digest: bytes
    pcr: int
    files: int
    extended: bool  # False: this digest was already extended this boot (a restart)
    others: tuple[str, ...]  # other digests DomS0 logged into this PCR this boot
    pcr_value: bytes

    def hint(self) -> str:
        """Why the measurement PCR may not match, when the log knows."""
        if not self.others:
            return ""
        return (f"a different DomS0 (digest {self.others[0][:16]}…) was measured into "
                f"host PCR {BANK}:{self.pcr} earlier in this host boot; reboot the host "
                f"to run this one")


def code_files(packages: Sequence[str] = CODE_PACKAGES) -> list[tuple[str, Path]]:
    """(``package/relative/path``, file) for every installed file, sorted by path.
    Bytecode caches are left out: the interpreter writes them, they are not code we
    shipped, and they would change the digest between two identical starts."""
    found: list[tuple[str, Path]] = []
    for package in packages:
        root = Path(import_module(package).__file__ or "").parent
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            for name in names:
                path = Path(folder) / name
                if path.suffix not in _SKIP_SUFFIXES:
                    found.append((f"{package}/{path.relative_to(root).as_posix()}", path))
    return sorted(found)


def measurement_claim(config_file: Path | None, policy_files: Iterable[Path]
                      ) -> tuple[MeasurementClaim, int]:
    """The three digests DomS0 is made of — its code, its configuration file, its
    policy files — and the file count. Kept apart so that a peer host can approve a
    DomS0 by its code alone while still seeing which configuration and policy it runs
    (migration); only their combination, :meth:`MeasurementClaim.digest`, is extended.

    Each file is hashed length-prefixed as ``label ‖ content``, so no two file sets hash
    alike. Configuration and policy files are labelled by role and file name, not by
    their absolute path, so moving the state folder's parent does not change a digest.
    """
    code = code_files()
    config = [("config", config_file)] if config_file is not None else []
    policies = sorted((f"policy/{p.name}", p) for p in policy_files)
    claim = MeasurementClaim(_files_digest(b"code", code), _files_digest(b"config", config),
                             _files_digest(b"policy", policies))
    return claim, len(code) + len(config) + len(policies)


def measurement_digest(config_file: Path | None, policy_files: Iterable[Path]
                       ) -> tuple[bytes, int]:
    """What DomS0 extends into its host PCR, and the file count."""
    claim, files = measurement_claim(config_file, policy_files)
    return claim.digest(), files


def _files_digest(role: bytes, entries: Sequence[tuple[str, Path]]) -> bytes:
    hasher = hashlib.sha256(_DOMAIN + role + b"\x00")
    for label, path in entries:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise MeasurementError(f"cannot measure {path}: {exc}") from exc
        name = label.encode()
        hasher.update(struct.pack(">I", len(name)) + name)
        hasher.update(struct.pack(">Q", len(content)) + content)
    return hasher.digest()


def runtime_log(path: Path, pcr: int) -> MeasurementLog | None:
    """This boot's runtime measurement log as a migration proof carries it, or None if
    there is none that parses."""
    state = _read_log(path, pcr)
    return None if state is None else MeasurementLog(pcr, state.start, state.digests)


@dataclass(frozen=True)
class _LogState:
    start: bytes
    digests: tuple[bytes, ...]

    def replay(self) -> bytes:
        value = self.start
        for digest in self.digests:
            value = extend(value, digest, BANK)
        return value


def _read_log(path: Path, pcr: int) -> _LogState | None:
    """The log's state, or None if missing, malformed, of another version or PCR."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    label = f"{BANK}:{pcr}"
    try:
        entries = [json.loads(line) for line in lines if line.strip()]
        if not entries or entries[0].get("type") != "start":
            return None
        if any(e.get("version") != LOG_VERSION or e.get("pcr") != label for e in entries):
            return None
        digests = tuple(bytes.fromhex(e["digest"]) for e in entries[1:]
                        if e["type"] == "extend")
        return _LogState(bytes.fromhex(entries[0]["value"]), digests)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _append(path: Path, entry: dict[str, object]) -> None:
    line = json.dumps({"version": LOG_VERSION, **entry}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def measure_into(tcti: str, pcr: int, log_path: Path, digest: bytes, files: int
                 ) -> Measurement:
    """Extend ``digest`` into host PCR ``pcr`` unless this boot's log proves it is
    already there (see the module docstring)."""
    log_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    label = f"{BANK}:{pcr}"
    lock_fd = os.open(log_path.with_name(log_path.name + ".lock"), os.O_RDWR | os.O_CREAT,
                      0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with connect(tcti) as esapi:
            current = read_pcrs(esapi, PcrSelection.parse(label))[label]
            state = _read_log(log_path, pcr)
            if state is not None and state.replay() == current:
                others = tuple(d.hex() for d in state.digests if d != digest)
                if digest in state.digests:
                    log.info("DomS0 %s already measured into host PCR %s this boot; not "
                             "extending again", digest.hex()[:16], label)
                    return Measurement(digest, pcr, files, False, others, current)
            else:
                if log_path.exists():
                    log.info("runtime measurement log %s does not replay to host PCR %s "
                             "(a previous boot's?); starting a new one", log_path, label)
                    os.replace(log_path, log_path.with_name(log_path.name + ".stale"))
                _append(log_path, {"type": "start", "pcr": label, "value": current.hex(),
                                   "unix": int(time.time())})
                others = ()
            _append(log_path, {"type": "extend", "pcr": label, "digest": digest.hex(),
                               "event": EVENT, "files": files, "pid": os.getpid(),
                               "unix": int(time.time())})
            extend_pcr(esapi, pcr, digest, BANK)
            value = read_pcrs(esapi, PcrSelection.parse(label))[label]
    except OSError as exc:
        raise MeasurementError(f"cannot use the measurement log {log_path}: {exc}") from exc
    finally:
        os.close(lock_fd)
    log.info("DomS0 %s measured into host PCR %s (%d files)", digest.hex()[:16], label, files)
    return Measurement(digest, pcr, files, True, others, value)


def predicted_value(tcti: str, pcr: int, log_path: Path, digest: bytes) -> bytes:
    """The value host PCR ``pcr`` has once a DomS0 with ``digest`` has measured itself
    first this boot: what ``doms0 policy approve`` signs for the measurement PCR, so
    an approval made from a new installation holds after the next reboot."""
    label = f"{BANK}:{pcr}"
    with connect(tcti) as esapi:
        current = read_pcrs(esapi, PcrSelection.parse(label))[label]
    state = _read_log(log_path, pcr)
    start = state.start if state is not None and state.replay() == current else current
    return extend(start, digest, BANK)
