"""Part 3 ECC commands beyond ECDH as declarations: TPM2_ECC_Parameters (14.6),
TPM2_EC_Ephemeral (19.3), TPM2_Commit (19.2) and TPM2_ZGen_2Phase (14.7), with the
Part 2 types only they use (TPMS_ALGORITHM_DETAIL_ECC, TPMI_ECC_KEY_EXCHANGE).
TPMA_CC as libtpms reports them (checked by tests/emulator/test_differential_ecc.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..codec import UINT16, Int, Sized
from ..commands import Auth, Command, HandleSpec
from ..constants import CC, RC, TPM_ALG
from ..objects.commands import TPMI_DH_OBJECT
from ..objects.public import (
    CURVE_BYTES,
    ECC_SCHEMES,
    KDFS,
    MAX_ECC_KEY_BYTES,
    Scheme,
    SchemeWire,
)
from ..structures import TPM2B_SENSITIVE_DATA
from .commands import TPM2B_ECC_POINT

# TPMI_ECC_CURVE (Part 2, 11.2.5.5): an implemented curve, else TPM_RC_CURVE.
TPMI_ECC_CURVE = Annotated[int, Int("H", tuple(CURVE_BYTES), RC.CURVE)]
# TPMI_ECC_KEY_EXCHANGE (Part 2, 11.2), without TPM_ALG_NULL as TPM2_ZGen_2Phase
# takes it: of ECDH, ECMQV and SM2 only ECDH is implemented (TPM_RC_SCHEME otherwise).
# libtpms accepts ECMQV and SM2, but its ECMQV answers TPM_RC_FAILURE (libtpms 0.9.2,
# observed through swtpm 0.7.1), so there is no working behaviour to match there.
KEY_EXCHANGE_SCHEMES = (TPM_ALG.ECDH,)
TPMI_ECC_KEY_EXCHANGE = Annotated[int, Int("H", KEY_EXCHANGE_SCHEMES, RC.SCHEME)]
TPM2B_ECC_PARAMETER = Annotated[bytes, Sized(MAX_ECC_KEY_BYTES)]


@dataclass(frozen=True)
class TPMS_ALGORITHM_DETAIL_ECC:
    """Part 2, 11.2.5.7: a curve's domain parameters and the TPM's default KDF and
    signing scheme for it."""

    curveID: UINT16
    keySize: UINT16
    kdf: Annotated[Scheme, SchemeWire(KDFS, RC.KDF)]
    sign: Annotated[Scheme, SchemeWire(ECC_SCHEMES, RC.SCHEME, (TPM_ALG.ECDAA,))]
    p: TPM2B_ECC_PARAMETER
    a: TPM2B_ECC_PARAMETER
    b: TPM2B_ECC_PARAMETER
    gX: TPM2B_ECC_PARAMETER
    gY: TPM2B_ECC_PARAMETER
    n: TPM2B_ECC_PARAMETER
    h: TPM2B_ECC_PARAMETER


@dataclass(frozen=True)
class ECC_Parameters_In:
    curveID: TPMI_ECC_CURVE


@dataclass(frozen=True)
class ECC_Parameters_Out:
    parameters: TPMS_ALGORITHM_DETAIL_ECC


@dataclass(frozen=True)
class EC_Ephemeral_In:
    curveID: TPMI_ECC_CURVE


@dataclass(frozen=True)
class EC_Ephemeral_Out:
    Q: TPM2B_ECC_POINT
    counter: UINT16


@dataclass(frozen=True)
class Commit_In:
    P1: TPM2B_ECC_POINT
    s2: TPM2B_SENSITIVE_DATA
    y2: TPM2B_ECC_PARAMETER


@dataclass(frozen=True)
class Commit_Out:
    K: TPM2B_ECC_POINT
    L: TPM2B_ECC_POINT
    E: TPM2B_ECC_POINT
    counter: UINT16


@dataclass(frozen=True)
class ZGen_2Phase_In:
    inQsB: TPM2B_ECC_POINT
    inQeB: TPM2B_ECC_POINT
    inScheme: TPMI_ECC_KEY_EXCHANGE
    counter: UINT16


@dataclass(frozen=True)
class ZGen_2Phase_Out:
    outZ1: TPM2B_ECC_POINT
    outZ2: TPM2B_ECC_POINT


ECC_COMMANDS: tuple[Command, ...] = (
    Command(CC.ECC_Parameters, (), ECC_Parameters_In, ECC_Parameters_Out),
    Command(CC.EC_Ephemeral, (), EC_Ephemeral_In, EC_Ephemeral_Out, encrypt=True),
    Command(CC.Commit, (HandleSpec("signHandle", TPMI_DH_OBJECT, Auth.USER),),
            Commit_In, Commit_Out, decrypt=True, encrypt=True),
    Command(CC.ZGen_2Phase, (HandleSpec("keyA", TPMI_DH_OBJECT, Auth.USER),),
            ZGen_2Phase_In, ZGen_2Phase_Out, decrypt=True, encrypt=True),
)
