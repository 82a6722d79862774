"""tpm2-tools flows, one per command group, each run against any TCTI.

Every flow is a plain function ``flow(tcti, work)``: it drives unmodified tpm2-tools
5.x as subprocesses against ``tcti`` (``swtpm:host=…,port=…`` or ``tabrmd:…``) with
``work`` as its scratch folder, and asserts what a user of the tools would check: the
unsealed secret, a quote that ``tpm2_checkquote`` accepts, the recovered credential,
the lockout error, the counter value. Failures name the tool, its arguments and the
TPM response code the tools printed.

The flows are grouped by command group in the modules of this package; :data:`FLOWS`
lists them all, in the order a suite should run them. They are self-contained: each
makes its own primary keys, NV indices (numbers unique to the flow) and persistent
handles, and restores what it changes on the TPM (owner authorization,
dictionary-attack parameters), so they can share one TPM.
Without a resource manager the tools leave every object they load in the TPM
(``client-behaviour.md`` 1.6: libtpms has three object slots), so :class:`~.runner.Tools`
flushes transient objects after each invocation that loads one.

Keys are ECC P-256 unless the flow is about RSA: an RSA primary costs a prime search
in the builtin engine. Command sequences follow the tools' man pages and the
canonical flows of tpm2-tools' own integration tests.
"""

from __future__ import annotations

from .admin import changeauth, clear, dictionary_lockout, evictcontrol, hierarchy_control
from .attestation import (
    certify,
    credential_activation,
    credential_activation_rsa,
    quote_checkquote,
    time_nv_audit_attestation,
)
from .capability import capabilities
from .ecc import ecc_two_phase
from .nv import nv_bits, nv_counter, nv_extend, nv_locks, nv_ordinary, nv_policy
from .objects import (
    duplicate_import,
    ecdh,
    encrypt_decrypt,
    hash_and_hmac,
    import_external_key,
    primary_keys,
    rsa_encrypt_decrypt,
    sign_verify,
)
from .policies import (
    policy_authorize,
    policy_or,
    policy_signed_and_nv,
    seal_unseal_compound_policy,
    seal_unseal_pcr_policy,
)
from .runner import Flow, ToolFailed, Tools, tools_for
from .sessions import hmac_session, salted_encrypted_sessions

__all__ = ["FLOWS", "Flow", "ToolFailed", "Tools", "tools_for"]

FLOWS: dict[str, Flow] = {
    "capabilities": capabilities,
    "primary_keys": primary_keys,
    "seal_unseal_pcr_policy": seal_unseal_pcr_policy,
    "seal_unseal_compound_policy": seal_unseal_compound_policy,
    "policy_or": policy_or,
    "policy_authorize": policy_authorize,
    "policy_signed_and_nv": policy_signed_and_nv,
    "quote_checkquote": quote_checkquote,
    "credential_activation": credential_activation,
    "credential_activation_rsa": credential_activation_rsa,
    "nv_ordinary": nv_ordinary,
    "nv_counter": nv_counter,
    "nv_bits": nv_bits,
    "nv_extend": nv_extend,
    "nv_locks": nv_locks,
    "nv_policy": nv_policy,
    "evictcontrol": evictcontrol,
    "changeauth": changeauth,
    "dictionary_lockout": dictionary_lockout,
    "hash_and_hmac": hash_and_hmac,
    "encrypt_decrypt": encrypt_decrypt,
    "rsa_encrypt_decrypt": rsa_encrypt_decrypt,
    "sign_verify": sign_verify,
    "duplicate_import": duplicate_import,
    "import_external_key": import_external_key,
    "certify": certify,
    "time_nv_audit_attestation": time_nv_audit_attestation,
    "ecdh": ecdh,
    "ecc_two_phase": ecc_two_phase,
    "hierarchy_control": hierarchy_control,
    "hmac_session": hmac_session,
    "salted_encrypted_sessions": salted_encrypted_sessions,
    # Last: it clears the owner hierarchy.
    "clear": clear,
}
