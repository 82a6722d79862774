"""Typed errors of the ``measure`` package.

Everything a caller can get wrong or an image can carry (a truncated kernel, a
command line with a NUL, a manifest from a future version) ends as one of these,
with a message a person can act on; callers map them to ``INVALID_ARGUMENT``.
A traceback from a parser is a bug, and the property tests look for one.
"""

from __future__ import annotations


class MeasureError(Exception):
    """Base of every error ``measure`` raises on bad input."""


class MalformedImage(MeasureError):
    """An image (kernel, initrd) is not what its format says it must be."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"malformed {kind}: {reason}")
        self.kind = kind
        self.reason = reason


class InvalidInput(MeasureError):
    """A command line or launch configuration cannot be measured as given."""


class ManifestError(MeasureError):
    """A manifest is not valid JSON of a known shape."""


class UnsupportedManifestVersion(ManifestError):
    """A manifest names a format version this code does not read (never misread)."""
