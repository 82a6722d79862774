"""Why a migration peer's evidence is refused, named so an operator can act on it.

Verifiers raise (never return ``False``): it is incorrect to ignore a failed check.
These are *remote* faults — the peer, or something between the hosts, sent what we
will not accept. A caller misusing the API locally (a P-256 key where P-384 is
required, a header that names another key) gets ``ValueError`` instead, so the two
never blur in a log. Messages name the check that failed and never carry a secret.
"""

from __future__ import annotations


class MigrationRefused(Exception):
    """Base class: evidence from the other host was refused; nothing was imported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PackageRefused(MigrationRefused):
    """A migration package is malformed, not signed by the source, made for another
    session or destination, or tampered with."""


class ProofRefused(MigrationRefused):
    """A destination's proof (host-TPM quote over its migration key) or its host
    certificate does not hold: another AK, another nonce, an unapproved DomS0, …"""
