"""DomS0's Unix socket: peer credentials turned into a TLS client certificate.

gRPC tells a server nothing about who is at the other end of a Unix socket, so
DomS0 does not let gRPC listen there. This relay accepts on the socket instead,
reads the peer's uid/gid/pid with ``SO_PEERCRED``, maps them to a principal
(:class:`UnixPrincipals`), and relays the connection's bytes over mutual TLS
(ALPN ``h2``) to DomS0's internal gRPC port — itself a Unix socket in a private
(0700) folder of the run directory — presenting a short-lived certificate for that
principal, minted in memory by the callers CA. An unmapped peer is relayed with an
``anonymous`` certificate naming its uid, so the server's answer (UNAUTHENTICATED)
can say whom to map. One asyncio loop in one thread serves every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import ssl
import stat
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .identity import CallersCA, UnixPeer, cert_pem, key_pem, new_key
from .principal import ANONYMOUS, Principal

log = logging.getLogger("doms0.unix")

CERT_LIFETIME: Final = datetime.timedelta(minutes=10)
REMINT_AFTER: Final = 300.0        # seconds: a cached context is re-minted past this age
_CHUNK: Final = 64 * 1024
_SERVER_NAME: Final = "localhost"  # in DomS0's server certificate


@dataclass(frozen=True)
class UnixPrincipals:
    """Who a local uid/gid is: ``"uid:N"`` and ``"gid:N"`` entries, uid entries first;
    DomS0's own uid is ``admin:local`` unless ``self_admin`` is off or an entry
    names that uid."""

    entries: Mapping[str, Principal] = field(default_factory=dict)
    self_uid: int = field(default_factory=os.getuid)
    self_admin: bool = True

    def principal_of(self, peer: UnixPeer) -> Principal:
        via = str(peer)
        for key in (f"uid:{peer.uid}", f"gid:{peer.gid}"):
            if key in self.entries:
                found = self.entries[key]
                return Principal(found.kind, found.name, via)
        if self.self_admin and peer.uid == self.self_uid:
            return Principal("admin", "local", via)
        return ANONYMOUS


def peer_credentials(sock: socket.socket) -> UnixPeer:
    """SO_PEERCRED: the pid, uid and gid the kernel recorded at connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return UnixPeer(uid, gid, pid)


class _Contexts:
    """Client TLS contexts per (principal, peer): certificates minted in memory and
    loaded through a memfd, so no private key ever touches a file system."""

    def __init__(self, ca: CallersCA, ca_pem: bytes) -> None:
        self._ca = ca
        self._ca_pem = ca_pem.decode()
        self._cache: dict[tuple[Principal, UnixPeer], tuple[float, ssl.SSLContext]] = {}

    def get(self, principal: Principal, peer: UnixPeer) -> ssl.SSLContext:
        key = (principal, peer)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < REMINT_AFTER:
            return cached[1]
        context = self._mint(principal, peer)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = (now, context)
        return context

    def _mint(self, principal: Principal, peer: UnixPeer) -> ssl.SSLContext:
        private = new_key()
        cert = self._ca.issue(principal, private.public_key(), lifetime=CERT_LIFETIME,
                              unix_peer=peer)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self._ca_pem)
        context.set_alpn_protocols(["h2"])
        fd = os.memfd_create("doms0-relay-cert", os.MFD_CLOEXEC)
        try:
            os.write(fd, cert_pem(cert) + key_pem(private))
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return context


class UnixRelay:
    """Accepts on ``path``, relays to the internal mutual-TLS gRPC socket."""

    def __init__(self, path: Path, internal: Path, ca: CallersCA, ca_pem: bytes,
                 principals: UnixPrincipals) -> None:
        self.path = path
        self.internal = internal
        self.principals = principals
        self._contexts = _Contexts(ca, ca_pem)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="unix-relay", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Bind (replacing a stale socket file, never anything else) and serve."""
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise OSError(f"cannot listen on unix:{self.path}: it exists and is not "
                              "a socket")
            self.path.unlink()
        self._server = self._loop.run_until_complete(
            asyncio.start_unix_server(self._accept, path=str(self.path)))
        # Who may call is decided by the peer credentials, not by the file mode:
        # every local user may connect, and an unmapped one is answered UNAUTHENTICATED.
        os.chmod(self.path, 0o666)  # noqa: S103
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def stop(self) -> None:
        """Stop accepting and cut every relayed connection."""
        if self._server is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_credentials(writer.get_extra_info("socket"))
        except OSError as exc:
            log.warning("unix socket: no peer credentials (%s); connection closed", exc)
            writer.close()
            return
        principal = self.principals.principal_of(peer)
        log.debug("unix socket: %s is %s", peer, principal)
        try:
            context = self._contexts.get(principal, peer)
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                str(self.internal), ssl=context, server_hostname=_SERVER_NAME)
        except (OSError, ssl.SSLError) as exc:
            log.error("unix socket: cannot reach DomS0's internal port for %s: %s", peer, exc)
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer),
                                 _pipe(upstream_reader, writer))
        finally:
            for w in (writer, upstream_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ssl.SSLError):
        pass
    finally:
        # One direction ending ends the connection: an HTTP/2 peer that stops
        # sending is gone.
        writer.close()
