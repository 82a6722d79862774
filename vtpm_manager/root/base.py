"""What DomS0 asks of a root of trust: the KEK, a monotonic counter, and a description."""

from __future__ import annotations

import abc

from ..counter import MonotonicCounter
from ..kek import KeyEncryptionKey


class RootRefused(Exception):
    """The root of trust will not release DomS0's keys; the message says why and what
    the operator can do about it (boot the approved configuration, approve the new
    one, restore a blob, re-provision)."""


class RootOfTrust(abc.ABC):
    """Where DomS0's key-encryption key and rollback counter live."""

    #: "software" or "tpm"; shown in logs and refusals.
    kind: str = ""

    #: The host PCR DomS0 measures itself into before :meth:`open`, or None when the
    #: root has no PCRs to measure into (the software root).
    measure_pcr: int | None = None

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the log: what backs the keys and how they are protected."""

    @abc.abstractmethod
    def open(self) -> KeyEncryptionKey:
        """Release the KEK, or raise :class:`RootRefused` with an actionable message."""

    @abc.abstractmethod
    def counter(self) -> MonotonicCounter:
        """The rollback-protection counter (available after :meth:`open`)."""
