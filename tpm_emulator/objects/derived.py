"""Derived objects (Part 1, "Derived Objects"; Part 3, 12.9 TPM2_CreateLoaded).

A derivation parent is a restricted keyedHash decryption key whose XOR scheme names a
hash and KDF1_SP800_108. A child made under it is a function of the parent's secret and
a (label, context) pair, so the same pair always gives the same key:

    stream = KDFa(schemeHash, parent.sensitive, label, context, 8192)

read as one octet stream by the key generation, as the reference's KDF-seeded
"RAND_STATE" does (its sizeInBits is TPM_MAX_DERIVATION_BITS, 8192, whatever is
read). The template's unique field carries a TPMS_DERIVE (label, context); either may
instead come from a TPMS_DERIVE in the sensitive data, the template winning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from ..codec import Reader, Sized, schema, unmarshal_from
from ..constants import RC, TPM_ALG
from ..crypto import HASHES, kdfa
from ..errors import TpmError
from .derive import Rng
from .public import (
    TPMA_OBJECT,
    TPMS_ECC_POINT,
    TPMS_KEYEDHASH_PARMS,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    UniqueBytes,
)

MAX_DERIVATION_BITS = 8192  # TPM_MAX_DERIVATION_BITS
LABEL_MAX_BUFFER = 32
TPM2B_LABEL = Annotated[bytes, Sized(LABEL_MAX_BUFFER)]


@dataclass(frozen=True)
class TPMS_DERIVE:
    """Part 2, TPMS_DERIVE: the label and context of a derived object."""

    label: TPM2B_LABEL
    context: TPM2B_LABEL


def is_derivation_parent(pub: TPMT_PUBLIC) -> bool:
    return (pub.type == TPM_ALG.KEYEDHASH and pub.has(TPMA_OBJECT.restricted)
            and pub.has(TPMA_OBJECT.decrypt) and not pub.has(TPMA_OBJECT.sign))


def is_parent(pub: TPMT_PUBLIC) -> bool:
    """The reference's isParent: any other restricted decryption key, a symmetric one
    included (it protects children with its own key; it cannot receive an outer
    wrapper's seed, which needs an asymmetric key)."""
    return (pub.type != TPM_ALG.KEYEDHASH and pub.has(TPMA_OBJECT.restricted)
            and pub.has(TPMA_OBJECT.decrypt) and not pub.has(TPMA_OBJECT.sign))


def parse_template(template: bytes) -> tuple[TPMT_PUBLIC, TPMS_DERIVE]:
    """A TPM2B_TEMPLATE under a derivation parent: a TPMT_PUBLIC whose unique field is a
    TPMS_DERIVE. The public area comes back with an empty unique of its type."""
    r = Reader(template)
    values: dict[str, Any] = {}
    for name, wire in schema(TPMT_PUBLIC)[:-1]:
        values[name] = wire.read(r, values)
    derive = unmarshal_from(TPMS_DERIVE, r)
    if r.remaining():
        raise TpmError(RC.SIZE, "octets after the template")
    empty = TPMS_ECC_POINT(b"", b"") if values["type"] == TPM_ALG.ECC else UniqueBytes(b"")
    return TPMT_PUBLIC(**values, unique=empty), derive


def label_and_context(template: TPMS_DERIVE, data: bytes) -> TPMS_DERIVE:
    """The reference's SetLabelAndContext: a TPMS_DERIVE in the sensitive data fills
    whatever the template left empty; its unmarshal codes come back bare."""
    if not data:
        return template
    given = unmarshal_from(TPMS_DERIVE, Reader(data))
    return TPMS_DERIVE(template.label or given.label, template.context or given.context)


def derivation_rng(parent: TPMT_PUBLIC, parent_sensitive: TPMT_SENSITIVE,
                   derive: TPMS_DERIVE) -> Rng:
    parms = parent.parameters
    assert isinstance(parms, TPMS_KEYEDHASH_PARMS)
    h = HASHES[parms.scheme.hashAlg]
    stream = kdfa(h, parent_sensitive.sensitive, derive.label, derive.context, b"",
                  MAX_DERIVATION_BITS)
    position = 0

    def generate(n: int) -> bytes:
        nonlocal position
        if position + n > len(stream):  # the reference's generator runs dry
            raise TpmError(RC.NO_RESULT, "derivation limit reached")
        out = stream[position : position + n]
        position += n
        return out

    return Rng(generate)
