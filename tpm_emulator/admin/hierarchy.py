"""The hierarchies as authorization entities and as things that can be switched off.

* ``permanent_entity``: what TPM_RH_OWNER / ENDORSEMENT / PLATFORM / LOCKOUT authorize
  with (Part 1, 13 and 19.8.x: lockoutAuth is the only DA-protected permanent handle),
  and a PCR's authValue/authPolicy when it belongs to the PC-client authorization
  groups (PCR 20-22, as libtpms has them).
* ``load_refusal``: the reference's EntityGetLoadStatus rules for disabled
  hierarchies: naming a disabled hierarchy is TPM_RC_HIERARCHY; its persistent objects
  and NV indices do not exist meanwhile (TPM_RC_HANDLE, as libtpms answers).
* ``flush``: ObjectFlushHierarchy / NvFlushHierarchy for TPM2_Clear, ChangeEPS,
  ChangePPS and HierarchyControl.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..constants import HT, RC, RH
from ..lifecycle import Orderly
from ..nv.public import TPMA_NV
from ..pcr import PCR_AUTH_GROUP, PCR_POLICY_GROUP
from ..sessions import Entity
from . import da
from .state import HierarchyAuth, StateClear

if TYPE_CHECKING:
    from ..state import ResetData
    from ..tpm import TPM

_U32 = struct.Struct(">I")


def hierarchy_auth(tpm: TPM, handle: int) -> HierarchyAuth | None:
    """The authValue/authPolicy pair behind a hierarchy handle (None: not a hierarchy
    with an authorization). platformAuth is state-clear data; the others persist."""
    admin = tpm.perm.admin
    persistent: dict[int, HierarchyAuth] = {
        RH.OWNER: admin.owner, RH.ENDORSEMENT: admin.endorsement, RH.LOCKOUT: admin.lockout}
    if handle == RH.PLATFORM:
        return tpm.reset_data.stclear.platform
    return persistent.get(handle)


def permanent_entity(tpm: TPM, handle: int) -> Entity:
    """A permanent handle, PCR or session as an authorization entity (Name = handle)."""
    name = _U32.pack(handle)
    if handle >> 24 == HT.PCR:
        auth = tpm.reset_data.stclear.pcr_auth if handle in PCR_AUTH_GROUP else b""
        policy = tpm.perm.admin.pcr_policy.digest if handle in PCR_POLICY_GROUP else b""
        return Entity(name, auth, policy, da_exempt=True)
    h = hierarchy_auth(tpm, handle)
    if h is None:  # TPM_RH_NULL authorizes with the Empty Buffer; sessions never do
        return Entity(name, b"", b"", da_exempt=handle == RH.NULL)
    return Entity(name, h.auth_value, h.policy.digest, da_exempt=handle != RH.LOCKOUT)


def enabled(stclear: StateClear, hierarchy: int) -> bool:
    """Whether a hierarchy is enabled (TPM_RH_NULL always is)."""
    enables: dict[int, bool] = {RH.OWNER: stclear.sh_enable, RH.ENDORSEMENT: stclear.eh_enable,
                                RH.PLATFORM: stclear.ph_enable}
    return enables.get(hierarchy, True)


def load_refusal(tpm: TPM, handle: int) -> int | None:
    """The code a handle-area handle earns because its hierarchy is disabled, if any
    (the caller numbers it with the handle's position)."""
    htype = handle >> 24
    stclear = tpm.reset_data.stclear
    if htype == HT.PERMANENT:
        return None if enabled(stclear, handle) else RC.HIERARCHY
    if htype == HT.PERSISTENT:
        obj = tpm.perm.persistent.get(handle)
        if obj is not None and not enabled(stclear, obj.hierarchy):
            return RC.HANDLE
    elif htype == HT.NV_INDEX and handle in tpm.perm.nv:
        platform = tpm.perm.nv.get(handle).has(TPMA_NV.PLATFORMCREATE)
        if not (stclear.ph_enable_nv if platform else stclear.sh_enable):
            return RC.HANDLE
    return None


def flush(tpm: TPM, hierarchy: int, *, persistent: bool) -> None:
    """Unload the transient objects of ``hierarchy``; with ``persistent``, also delete
    its persistent objects and, for the owner, the indices the owner created."""
    slots = tpm.reset_data.objects
    for slot in [i for i, o in slots.items() if o.hierarchy == hierarchy]:
        del slots[slot]
    if not persistent:
        return
    evict = tpm.perm.persistent
    for handle in [h for h, o in evict.items() if o.hierarchy == hierarchy]:
        del evict[handle]
    if hierarchy == RH.OWNER:
        nv = tpm.perm.nv
        for index in [h for h in nv.handles()
                      if not nv.get(h).has(TPMA_NV.PLATFORMCREATE)]:
            nv.delete(index)


def on_startup(tpm: TPM, rd: ResetData, saved: ResetData | None) -> None:
    """TPM2_Startup: a TPM Resume (``saved``) brings the state-clear data back from
    Shutdown(STATE), with phEnable SET as after every Startup; a TPM Reset or Restart
    starts it afresh. Then the DA startup rules (before ``orderly`` is cleared)."""
    if saved is not None:
        rd.stclear = saved.stclear.copy()
        rd.stclear.ph_enable = True
    da.on_startup(tpm.perm.admin.da, tpm.perm.orderly)


def void_orderly(tpm: TPM) -> None:
    """A change to state-clear data after TPM2_Shutdown: the saved state no longer
    matches, so a later Startup(STATE) must fail (the reference's g_clearOrderly)."""
    tpm.perm.orderly = Orderly.NONE
    tpm.perm.shutdown_state = None
