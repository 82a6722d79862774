"""What TPM2_LoadExternal checks of the areas it is given (Part 3, 12.3), in the order
libtpms checks them: ObjectLoad's public-area rules, then the key validation of the
reference's CryptValidateKeys, then the RSA private-key load. The order decides which
response code (and which parameter number) a malformed pair earns, so it follows the
reference rather than grouping the checks by topic.

Parameter numbers: inPrivate is 1, inPublic is 2. A few failures come back unnumbered
in libtpms (an ECC private key out of range, a binding mismatch), and so they do here.
"""

from __future__ import annotations

import hashlib

from ..constants import RC, TPM_ALG
from ..crypto import HASHES
from ..errors import TpmError, with_parameter
from .checks import external_key_checks, public_attributes_validation, scheme_checks
from .derive import CURVE_ORDER, consistent
from .public import (
    CURVE_BYTES,
    TPMS_ECC_PARMS,
    TPMS_KEYEDHASH_PARMS,
    TPMS_RSA_PARMS,
    TPMS_SYMCIPHER_PARMS,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
)

IN_PRIVATE, IN_PUBLIC = 1, 2
NULL = TPM_ALG.NULL
MAX_SYM_DATA = 128  # a data object's secret, when no scheme's hash bounds it


def _public(rc: int, why: str = "") -> TpmError:
    return TpmError(with_parameter(rc, IN_PUBLIC), why)


def _private(rc: int, why: str = "") -> TpmError:
    return TpmError(with_parameter(rc, IN_PRIVATE), why)


def _digest_size(pub: TPMT_PUBLIC) -> int:
    return 0 if pub.nameAlg == NULL else pub.name_hash.size


def validate_external(pub: TPMT_PUBLIC, sens: TPMT_SENSITIVE | None) -> None:
    """ObjectLoad for an object with no parent. Without a sensitive area, or without a
    nameAlg (no Name, so nothing to bind), only the schemes are checked; with both,
    the seed must fit the nameAlg before the attributes are looked at."""
    full = sens is not None and pub.nameAlg != NULL
    if full and sens is not None and len(sens.seedValue) > pub.name_hash.size:
        raise _private(RC.KEY_SIZE, "seedValue longer than a nameAlg digest")
    try:
        if full:
            public_attributes_validation(None, pub)
        else:
            scheme_checks(None, pub)
    except TpmError as e:
        raise _public(e.rc, str(e)) from None
    if sens is None:
        _public_key(pub)
    else:
        _key_pair(pub, sens)


def _public_key(pub: TPMT_PUBLIC) -> None:
    """A public key alone must have the size its parameters promise (Part 1, 27.4)."""
    p = pub.parameters
    if isinstance(p, TPMS_ECC_PARMS) and pub.nameAlg == NULL:
        # Without a Name the point is used as given: its size is checked, not the curve.
        size = CURVE_BYTES[p.curveID]
        if len(pub.unique.x) != size or len(pub.unique.y) != size:
            raise _public(RC.KEY, "ECC point of the wrong size")
        return
    if isinstance(p, TPMS_KEYEDHASH_PARMS | TPMS_SYMCIPHER_PARMS):
        if len(pub.unique.buffer) != _digest_size(pub):
            raise _public(RC.KEY, "unique is not a nameAlg digest")
        return
    try:
        external_key_checks(pub, public_only=True)
    except TpmError as e:
        raise _public(e.rc, str(e)) from None


def _key_pair(pub: TPMT_PUBLIC, sens: TPMT_SENSITIVE) -> None:
    """The sensitive area against the public area (CryptValidateKeys with both)."""
    if sens.sensitiveType != pub.type:
        raise _private(RC.TYPE, "sensitive and public types differ")
    digest = _digest_size(pub)
    if digest and len(sens.authValue) > digest:
        raise _private(RC.SIZE, "authValue longer than a nameAlg digest")
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS):
        try:
            external_key_checks(pub, public_only=False)
        except TpmError as e:
            raise _public(e.rc, str(e)) from None
        prime = sens.sensitive
        if len(prime) * 2 != p.keyBits // 8 or prime[0] < 0x80:
            raise _private(RC.KEY_SIZE, "not a prime of half the modulus size")
        if not consistent(pub, sens):  # the private exponent cannot be computed
            raise TpmError(RC.BINDING, "the prime does not divide the modulus")
        return
    if isinstance(p, TPMS_ECC_PARMS):
        d = int.from_bytes(sens.sensitive, "big")
        if not 0 < d < CURVE_ORDER[p.curveID]:
            raise TpmError(RC.KEY_SIZE, "ECC private key out of range")
        if pub.nameAlg != NULL and not consistent(pub, sens):
            raise TpmError(RC.BINDING, "the point is not the private key's")
        return
    if isinstance(p, TPMS_SYMCIPHER_PARMS):
        if len(sens.sensitive) != p.sym.keyBits // 8:
            raise _private(RC.KEY_SIZE, "key size differs from keyBits")
    elif isinstance(p, TPMS_KEYEDHASH_PARMS):
        if len(sens.sensitive) > _keyed_hash_limit(p):
            raise _private(RC.KEY_SIZE, "key longer than the scheme's hash block")
    if pub.nameAlg != NULL:
        if len(sens.seedValue) != digest:
            raise _private(RC.KEY_SIZE, "seedValue is not a nameAlg digest")
        if not consistent(pub, sens):
            raise TpmError(RC.BINDING, "unique is not H(seedValue || key)")


def _keyed_hash_limit(p: TPMS_KEYEDHASH_PARMS) -> int:
    """An HMAC or XOR key is at most one block of its scheme's hash; a data object's
    secret at most MAX_SYM_DATA."""
    scheme = p.scheme
    if scheme.scheme == NULL:
        return MAX_SYM_DATA
    return int(hashlib.new(HASHES[scheme.hashAlg].name).block_size)
