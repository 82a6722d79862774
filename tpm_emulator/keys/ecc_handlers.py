"""TPM2_ECC_Parameters (Part 3, 14.6), TPM2_EC_Ephemeral (19.3), TPM2_Commit (19.2)
and TPM2_ZGen_2Phase (14.7), registered in the shared handler table.

Commit and EC_Ephemeral make a value r from the commit state (keys/commit.py) and
hand out the counter that names it; ZGen_2Phase and an ECDAA TPM2_Sign recompute r
from that counter and use it up. Checks run in the order of the reference's command
actions, so a misuse earns libtpms' code and handle or parameter number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC, RC, TPM_ALG
from ..crypto import HASHES
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from ..objects import store
from ..objects.public import TPMA_OBJECT, TPMS_ECC_PARMS, TPMS_ECC_POINT, Scheme
from ..objects.store import LoadedObject
from . import ec_math
from . import ecc_commands as ec
from .commit import generate_r

if TYPE_CHECKING:
    from ..tpm import TPM

NULL = TPM_ALG.NULL
A = TPMA_OBJECT
EMPTY_POINT = TPMS_ECC_POINT(b"", b"")
# The KDF a curve's TPMS_ALGORITHM_DETAIL_ECC names (libtpms: KDF1_SP800_56A with the
# hash of the curve's strength); no curve has a default signing scheme.
_CURVE_KDF_HASH = {256: TPM_ALG.SHA256, 384: TPM_ALG.SHA384, 521: TPM_ALG.SHA512}


def _minimal(v: int) -> bytes:
    return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")


def algorithm_detail(c: ec_math.Curve) -> ec.TPMS_ALGORITHM_DETAIL_ECC:
    """The curve as TPM2_ECC_Parameters reports it: p, a, b and G padded to the size
    of p, n and h in as few octets as they need (the reference's CryptEccGetParameters)."""
    size = c.size
    bits = c.p.bit_length()
    return ec.TPMS_ALGORITHM_DETAIL_ECC(
        c.curve_id, bits, Scheme(TPM_ALG.KDF1_SP800_56A, _CURVE_KDF_HASH[bits]), Scheme(),
        c.p.to_bytes(size, "big"), c.a.to_bytes(size, "big"), c.b.to_bytes(size, "big"),
        c.gx.to_bytes(size, "big"), c.gy.to_bytes(size, "big"), _minimal(c.n), _minimal(c.h))


@handles(CC.ECC_Parameters)
def ecc_parameters(tpm: TPM, inv: Invocation, p: ec.ECC_Parameters_In) -> ec.ECC_Parameters_Out:
    return ec.ECC_Parameters_Out(algorithm_detail(ec_math.curve(p.curveID)))


@handles(CC.EC_Ephemeral)
def ec_ephemeral(tpm: TPM, inv: Invocation, p: ec.EC_Ephemeral_In) -> ec.EC_Ephemeral_Out:
    """Q = [r]G for the current commit value, then the count is committed. (The
    reference retries with the next count when [r]G is the point at infinity; a
    0 < r < n never gives it.)"""
    commits = tpm.reset_data.commit
    c = ec_math.curve(p.curveID)
    r = generate_r(commits, None, c, b"")
    if r is None:
        raise TpmError(RC.NO_RESULT, "no commit value")
    q = ec_math.base_multiply(c, r)
    return ec.EC_Ephemeral_Out(ec_math.to_tpms(c, q), commits.commit())


def _ecc_parms(obj: LoadedObject) -> TPMS_ECC_PARMS:
    assert isinstance(obj.public.parameters, TPMS_ECC_PARMS)
    return obj.public.parameters


def _private(obj: LoadedObject) -> int:
    return int.from_bytes(obj.sensitive.sensitive, "big") if obj.sensitive else 0


def _multiply(c: ec_math.Curve, k: int, pt: tuple[int, int]) -> tuple[int, int]:
    """[k]P with a secret k; k = 0 (a key loaded without its private part) gives the
    point at infinity, TPM_RC_NO_RESULT, as the reference's multiply does."""
    if not 0 < k < c.n:
        raise TpmError(RC.NO_RESULT, "the product is the point at infinity")
    return ec_math.secret_multiply(c, k, pt)


@handles(CC.Commit)
def commit(tpm: TPM, inv: Invocation, p: ec.Commit_In) -> ec.Commit_Out:
    """Part 3, 19.2: K = [d]P2 and L = [r]P2 when the caller gives P2 = (H(s2) mod p,
    y2); E = [r]P1 when it gives P1, or [r]G when it gives neither."""
    obj = store.get(tpm, inv.handles[0])
    if obj.public.type != TPM_ALG.ECC:
        raise TpmError(with_handle(RC.KEY, 1), "not an ECC key")
    parms = _ecc_parms(obj)
    if parms.scheme.scheme != TPM_ALG.ECDAA:  # the only anonymous scheme
        raise TpmError(with_handle(RC.SCHEME, 1), "the key's scheme is not anonymous")
    if (len(p.s2) == 0) != (len(p.y2) == 0):
        raise TpmError(with_parameter(RC.SIZE, 3), "s2 and y2 go together")
    c = ec_math.curve(parms.curveID)
    commits = tpm.reset_data.commit
    r = generate_r(commits, None, c, obj.name)
    if r is None:
        raise TpmError(RC.NO_RESULT, "no commit value")
    p2: tuple[int, int] | None = None
    if p.s2:
        if obj.public.nameAlg not in HASHES:
            raise TpmError(with_handle(RC.HASH, 1), "the key has no name algorithm")
        x2 = int.from_bytes(obj.public.name_hash.digest(p.s2), "big") % c.p
        p2 = (x2, int.from_bytes(p.y2, "big"))
        if not ec_math.on_curve(c, p2):
            raise TpmError(with_parameter(RC.ECC_POINT, 2), "(H(s2), y2) is not on the curve")
        if obj.sensitive is None:
            raise TpmError(with_handle(RC.KEY, 1), "no private key loaded")
    p1: tuple[int, int] | None = None
    if p.P1.x or p.P1.y:  # an empty point (both coordinates empty) is no P1
        try:
            p1 = ec_math.from_tpms(c, p.P1)
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, 1), str(e)) from None
    k = l_ = e_ = EMPTY_POINT
    if p2 is not None:
        k = ec_math.to_tpms(c, _multiply(c, _private(obj), p2))
        l_ = ec_math.to_tpms(c, _multiply(c, r, p2))
    if p1 is not None or p2 is None:
        e_ = ec_math.to_tpms(c, _multiply(c, r, p1 if p1 is not None else c.g))
    return ec.Commit_Out(k, l_, e_, commits.commit())


@handles(CC.ZGen_2Phase)
def zgen_2phase(tpm: TPM, inv: Invocation, p: ec.ZGen_2Phase_In) -> ec.ZGen_2Phase_Out:
    """Part 3, 14.7 with ECDH (SP800-56A C(2e, 2s)): Z1 = [dsA]QsB with the key's
    static private key, Z2 = [deA]QeB with the ephemeral key of the caller's counter
    (from TPM2_EC_Ephemeral), which is then used up."""
    obj = store.get(tpm, inv.handles[0])
    pub = obj.public
    if pub.type != TPM_ALG.ECC:
        raise TpmError(with_handle(RC.KEY, 1), "not an ECC key")
    if pub.has(A.restricted) or not pub.has(A.decrypt):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "not an unrestricted decryption key")
    parms = _ecc_parms(obj)
    own = parms.scheme.scheme
    if own != NULL and own != p.inScheme:
        raise TpmError(with_parameter(RC.SCHEME, 3), "scheme differs from the key's")
    c = ec_math.curve(parms.curveID)
    points = []
    for n, point in ((1, p.inQsB), (2, p.inQeB)):
        try:
            points.append(ec_math.from_tpms(c, point))
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, n), str(e)) from None
    commits = tpm.reset_data.commit
    r = generate_r(commits, p.counter, c, b"")
    if r is None:
        raise TpmError(with_parameter(RC.VALUE, 4), "the counter is not outstanding")
    z1 = _multiply(c, _private(obj), points[0])
    z2 = _multiply(c, r, points[1])
    commits.end_commit(p.counter)
    return ec.ZGen_2Phase_Out(ec_math.to_tpms(c, z1), ec_math.to_tpms(c, z2))
