"""TPM2_GetCapability (Part 3, 30.2): what the TPM reports about itself.

Everything listed is derived from what is implemented — the command table, the hash
table, the PCR attribute table — so the report cannot drift from the code. Paging
follows Part 3: return entries at or after ``property``, at most ``propertyCount``,
and set moreData when more remain (tpm2-tools restarts from the last one + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .admin import presence
from .commands import COMMANDS
from .constants import (
    CAP,
    HT,
    MAX_CAP_ALGS,
    MAX_CAP_CC,
    MAX_CAP_HANDLES,
    MAX_PCR_PROPERTIES,
    MAX_TPM_PROPERTIES,
    PCR_SELECT_MAX,
    PT_FIXED,
    RC,
    RH,
    TPM_ALG,
    TPMA_ALGORITHM_HASH,
    TPMA_ALGORITHM_METHOD,
)
from .crypto import HASHES
from .errors import TpmError, with_parameter
from .keys.algorithms import KEY_ALGORITHMS
from .keys.signing import SIGNING_ALGORITHMS
from .objects.public import CURVE_BYTES, OBJECT_ALGORITHMS
from .pcr import pcr_property_bitmaps
from .structures import (
    TPML_ALG_PROPERTY,
    TPML_CC,
    TPML_CCA,
    TPML_ECC_CURVE,
    TPML_EMPTY,
    TPML_HANDLE,
    TPML_PCR_SELECTION,
    TPML_TAGGED_PCR_PROPERTY,
    TPML_TAGGED_TPM_PROPERTY,
    TPMS_ALG_PROPERTY,
    TPMS_CAPABILITY_DATA,
    TPMS_PCR_SELECTION,
    TPMS_TAGGED_PCR_SELECT,
    TPMS_TAGGED_PROPERTY,
)

T = TypeVar("T")
MAX_CAP_CURVES = 508  # (MAX_CAP_BUFFER - sizeof(capability) - sizeof(count)) / 2

# TPM_CAP_ALGS: only what a command can actually use. Hashes serve PCR banks, Hash,
# sessions and tickets; the object types and AES-CFB (which protects children and
# contexts) serve the object commands; the signing schemes serve Sign, VerifySignature
# and attestation; the encryption schemes and the other block modes serve the key
# commands (keys/algorithms.py). Property values are libtpms'.
# The key-derivation methods every session, protected object and secret uses: MGF1
# (OAEP), KDFa (SP800-108) and KDFe (SP800-56A); hash | method, as libtpms reports them.
METHODS: tuple[tuple[int, int], ...] = tuple(
    (alg, TPMA_ALGORITHM_HASH | TPMA_ALGORITHM_METHOD)
    for alg in (TPM_ALG.MGF1, TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF1_SP800_108))
ALGORITHMS: tuple[tuple[int, int], ...] = tuple(sorted(
    [(alg, TPMA_ALGORITHM_HASH) for alg in HASHES] + list(OBJECT_ALGORITHMS)
    + list(SIGNING_ALGORITHMS) + list(KEY_ALGORITHMS) + list(METHODS)
))

PERMANENT_HANDLES: tuple[int, ...] = (
    RH.OWNER, RH.NULL, RH.PW, RH.LOCKOUT, RH.ENDORSEMENT, RH.PLATFORM, RH.PLATFORM_NV,
)

PCR_PROPERTIES = pcr_property_bitmaps()
ACT_FIRST, ACT_LAST = 0x40000110, 0x4000011F  # TPM_RH_ACT_0 .. TPM_RH_ACT_F (Part 2, 7.4)


def page(items: Sequence[T], key: Callable[[T], int], start: int, count: int,
         limit: int) -> tuple[bool, list[T]]:
    """Entries with key >= start, at most min(count, limit); and whether more remain."""
    eligible = [i for i in items if key(i) >= start]
    n = min(count, limit)
    return len(eligible) > n, eligible[:n]


def get_capability(
    capability: int, prop: int, count: int,
    handles: Callable[[int], list[int]],
    tpm_properties: Callable[[], dict[int, int]],
    audited: Callable[[], list[int]] = list,
    pcr_allocation: dict[int, bytes] | None = None,
) -> tuple[bool, TPMS_CAPABILITY_DATA]:
    data: Any
    more = False
    if capability == CAP.ALGS:
        more, algs = page(ALGORITHMS, lambda a: a[0], prop & 0xFFFF if prop <= 0xFFFF
                          else 0x10000, count, MAX_CAP_ALGS)
        data = TPML_ALG_PROPERTY(tuple(TPMS_ALG_PROPERTY(a, p) for a, p in algs))
    elif capability == CAP.HANDLES:
        htype = prop >> 24
        if htype not in (HT.PCR, HT.NV_INDEX, HT.HMAC_SESSION, HT.POLICY_SESSION,
                         HT.PERMANENT, HT.TRANSIENT, HT.PERSISTENT):
            raise TpmError(with_parameter(RC.HANDLE, 2), "no such handle type")
        more, hs = page(handles(htype), lambda h: h, prop, count, MAX_CAP_HANDLES)
        data = TPML_HANDLE(tuple(hs))
    elif capability == CAP.COMMANDS:
        cmds = sorted(COMMANDS.values(), key=lambda c: c.cc)
        more, sel = page(cmds, lambda c: c.cc, prop, count, MAX_CAP_CC)
        data = TPML_CCA(tuple(c.tpma_cc for c in sel))
    elif capability == CAP.PP_COMMANDS:
        more, ccs = page(sorted(presence.PP_REQUIRED), lambda cc: cc, prop, count, MAX_CAP_CC)
        data = TPML_CC(tuple(ccs))
    elif capability == CAP.AUDIT_COMMANDS:  # ascending, as the reference lists them
        more, ccs = page(sorted(audited()), lambda cc: cc, prop, count, MAX_CAP_CC)
        data = TPML_CC(tuple(ccs))
    elif capability == CAP.PCRS:
        if prop != 0:  # the whole allocation or nothing (libtpms: TPM_RC_VALUE)
            raise TpmError(with_parameter(RC.VALUE, 2), "TPM_CAP_PCRS takes property 0")
        # The active allocation (admin/allocation.py); fully allocated when not given.
        full = bytes([0xFF] * PCR_SELECT_MAX)
        active = pcr_allocation or dict.fromkeys(sorted(HASHES), full)
        data = TPML_PCR_SELECTION(tuple(TPMS_PCR_SELECTION(alg, active[alg])
                                        for alg in sorted(active)))
    elif capability == CAP.TPM_PROPERTIES:
        props = sorted(tpm_properties().items())
        start = max(prop, PT_FIXED)
        more, sel_p = page(props, lambda p: p[0], start, count, MAX_TPM_PROPERTIES)
        data = TPML_TAGGED_TPM_PROPERTY(tuple(TPMS_TAGGED_PROPERTY(k, v) for k, v in sel_p))
    elif capability == CAP.PCR_PROPERTIES:
        more, sel_r = page(sorted(PCR_PROPERTIES.items()), lambda p: p[0], prop, count,
                           MAX_PCR_PROPERTIES)
        data = TPML_TAGGED_PCR_PROPERTY(tuple(TPMS_TAGGED_PCR_SELECT(k, v) for k, v in sel_r))
    elif capability == CAP.ECC_CURVES:
        more, curves = page(sorted(CURVE_BYTES), lambda c: c, prop, count, MAX_CAP_CURVES)
        data = TPML_ECC_CURVE(tuple(curves))
    else:  # AUTH_POLICIES, ACT: nothing implemented to report
        # They list permanent handles, ACT those of TPM_RH_ACT_0-F (libtpms: VALUE).
        first, last = (ACT_FIRST, ACT_LAST) if capability == CAP.ACT else (
            HT.PERMANENT << 24, (HT.PERMANENT << 24) | 0xFFFFFF)
        if not first <= prop <= last:
            raise TpmError(with_parameter(RC.VALUE, 2), "property outside the handle range")
        data = TPML_EMPTY(())
    return more, TPMS_CAPABILITY_DATA(capability, data)

